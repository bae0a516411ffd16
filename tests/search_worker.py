"""`python tests/search_worker.py ARGS...` = `socratic ARGS...` with the tests' tiny BatchNorm-free model registered
(started as separate worker processes by tests/test_search.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dist_support import register_flat_model  # noqa: E402

from socratic.cli import main  # noqa: E402

if __name__ == "__main__":
    register_flat_model()
    sys.exit(main(sys.argv[1:]))

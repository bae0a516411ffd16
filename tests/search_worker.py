"""`python tests/search_worker.py ARGS...` = `socratic ARGS...` with the tests' tiny BatchNorm-free model registered
(started as separate worker processes by tests/test_search.py). With SOCRATIC_TEST_KILL set to a JSON kill spec of
tests/fault_worker.py ({"at": "write" | "rename", "file": "last.pt", "count": N}) the worker SIGKILLs itself
half-way through, or right after, its N-th write of that checkpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dist_support import register_flat_model  # noqa: E402

from socratic.cli import main  # noqa: E402

if __name__ == "__main__":
    register_flat_model()
    if os.environ.get("SOCRATIC_TEST_KILL"):
        from fault_worker import _patch_checkpoint_writes

        _patch_checkpoint_writes(json.loads(os.environ["SOCRATIC_TEST_KILL"]))
    sys.exit(main(sys.argv[1:]))

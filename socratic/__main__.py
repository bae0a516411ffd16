import sys

from socratic.cli import main

sys.exit(main())

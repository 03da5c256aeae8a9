"""``python -m bench``: the same entry as ``armtwin bench``."""

import sys

from bench.cli import main

sys.exit(main())

import sys

from armtwin.cli import main

sys.exit(main())

"""``python -m qifusion``."""

import sys

from qifusion.cli import main

sys.exit(main())

"""``python -m gears``: the ``gears`` command (see :mod:`gears.local.cli`)."""

import sys

from gears.local.cli import main

sys.exit(main())

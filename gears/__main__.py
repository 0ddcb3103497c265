"""``python -m gears``: the ``gears`` command (see :mod:`gears.cli`)."""

import sys

from gears.cli import main

sys.exit(main())

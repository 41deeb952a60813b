"""``python -m samrefine``: the ``samrefine`` command line."""

import sys

from .cli import main

sys.exit(main())

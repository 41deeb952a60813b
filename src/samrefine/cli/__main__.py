"""``python -m samrefine.cli`` (e.g. under ``torchrun -m samrefine.cli build ...``)."""

import sys

from . import main

sys.exit(main())

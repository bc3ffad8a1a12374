"""``python -m gndesign`` (and ``torchrun -m gndesign``) runs the command line."""

import sys

from gndesign.cli import main

sys.exit(main())

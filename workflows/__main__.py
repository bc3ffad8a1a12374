"""``python -m workflows`` (and ``torchrun ... -m workflows train``) runs the ``gndesign`` command line."""

import sys

from workflows.cli import main

sys.exit(main())

"""``python -m scoresde.cli``: the ``scoresde`` command (also under ``torchrun ... -m scoresde.cli``)."""

import sys

from . import main

sys.exit(main())

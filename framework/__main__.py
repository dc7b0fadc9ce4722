"""``python -m framework`` is the ``kiln`` command."""

import sys

from framework.cli import main

sys.exit(main())

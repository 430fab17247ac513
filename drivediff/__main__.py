"""``python -m drivediff``: the ``drivediff`` command."""

import sys

from drivediff.cli import main

sys.exit(main())

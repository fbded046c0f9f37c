"""`python -m palfrey` runs the same command as the `palfrey` console script."""

import sys

from palfrey.cli import main

sys.exit(main())

"""``python -m qwenhost`` runs the command line."""

import sys

from qwenhost.cli import main

sys.exit(main())

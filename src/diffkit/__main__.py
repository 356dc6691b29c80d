"""`python -m diffkit` runs the command line."""

import sys

from diffkit.cli import main

sys.exit(main())

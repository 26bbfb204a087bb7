"""`python -m vmrig`: the same as the `vmrig` command."""

import sys

from vmrig.cli import main

sys.exit(main())

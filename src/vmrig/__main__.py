import sys

from vmrig.cli import main

sys.exit(main())

import sys

from zonegate.cli import main

sys.exit(main())

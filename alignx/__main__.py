import sys

from alignx.cli import main

sys.exit(main())

import sys

from senso.cli import main

sys.exit(main())

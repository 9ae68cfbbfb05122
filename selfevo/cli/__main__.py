import sys

from selfevo.cli import main

sys.exit(main())

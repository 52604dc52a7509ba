import sys

from densitywatch.cli import main

sys.exit(main())

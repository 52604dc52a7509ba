"""`python -m benchmarks.capacity`: compare capacity rules on held-out likelihood of fit data."""

import sys

from benchmarks.capacity.harness import main

sys.exit(main())

"""`python -m benchmarks.detection`: run the detection benchmark."""

import sys

from benchmarks.detection.harness import main

sys.exit(main())

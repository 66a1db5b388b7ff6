"""`python -m swansphere` is the `swansphere` CLI."""

import sys

from swansphere.cli import main

sys.exit(main())

"""`python -m khotui` is the same as the `khotui` console script."""

import sys

from khotui.cli.main import main

sys.exit(main())

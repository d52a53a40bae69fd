"""python -m textseg ... (see textseg.cli)."""

import sys

from textseg.cli import main

sys.exit(main())

import sys

from vitcifar.cli import main

sys.exit(main())

"""`python -m observd`: the same as the `observd` command."""

import sys

from observd.cli.main import main

sys.exit(main())

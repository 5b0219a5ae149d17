"""`python -m amberscan.cli`, the same as the `amberscan` command."""

import sys

from amberscan.cli import main

sys.exit(main())

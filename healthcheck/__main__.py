"""`python -m healthcheck` is the same as the `healthcheck` command."""

import sys

from healthcheck.cli import main

sys.exit(main())

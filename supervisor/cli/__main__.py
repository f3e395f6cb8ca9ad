"""`python -m supervisor.cli`: the `posguard` command."""

import sys

from supervisor.cli.main import main

sys.exit(main())

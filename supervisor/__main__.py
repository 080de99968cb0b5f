"""``python -m supervisor``: this repo's stack supervisor (not PyPI's supervisord)."""

import sys

from supervisor.cli import main

sys.exit(main())

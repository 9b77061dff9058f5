"""Entry point for `python -m svc`."""

import sys

from svc.cli import main

sys.exit(main())

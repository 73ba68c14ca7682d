"""``python -m quantc``: the command line (see quantc.cli)."""
import sys

from .cli import main

sys.exit(main())

"""`python3 -m dagy`: the dagy command (dagy.cli)."""
import sys

from .cli import main

sys.exit(main())

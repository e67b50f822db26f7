"""`python -m zimage ...`: the subcommands of zimage/cli.py."""
import sys

from .cli import entry

sys.exit(entry())

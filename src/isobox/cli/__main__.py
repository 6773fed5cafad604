import sys

from isobox.cli.main import entry

sys.exit(entry())

import sys

from isobox.runtime.cli import main

sys.exit(main())

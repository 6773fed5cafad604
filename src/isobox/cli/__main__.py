import sys

from isobox.cli.main import main

sys.exit(main())

import sys

from maskagain.cli.main import main

sys.exit(main())

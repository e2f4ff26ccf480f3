import sys

from emulators.cli import main

sys.exit(main())

import sys

from molwm.cli import main

sys.exit(main())

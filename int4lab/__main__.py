import sys

from int4lab.cli import main

sys.exit(main())

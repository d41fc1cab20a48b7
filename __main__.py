import sys

from nonsite.cli import main

sys.exit(main())

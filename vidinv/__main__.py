import sys

from vidinv.cli import main

sys.exit(main())

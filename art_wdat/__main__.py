"""``python -m art_wdat``: the ``art-wdat`` command line."""

import sys

from art_wdat.cli import main

if __name__ == "__main__":
    sys.exit(main())

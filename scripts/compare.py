"""Rebuild the comparison table from run directories: see simam_paddle/compare.py."""

import sys

from simam_paddle.compare import main

if __name__ == "__main__":
    sys.exit(main())

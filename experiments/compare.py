"""Compare registered models (default: the champions of net12, net3, fcrn) in a plotly dashboard."""

import sys

from depthtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))

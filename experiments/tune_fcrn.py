"""Sweep FCRN (Laina et al. 2016) with the shipped depthtune/configs/fcrn.yaml or --config FILE;
flags override it."""

import sys

from depthtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", "fcrn", *sys.argv[1:]]))

"""Sweep Net12 (Eigen & Fergus scales 1+2) with the shipped depthtune/configs/net12.yaml (or --config FILE);
flags override it."""

import sys

from depthtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", "net12", *sys.argv[1:]]))

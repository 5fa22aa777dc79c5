"""Sweep Net12 (Eigen & Fergus scales 1+2) with experiments/configs/net12.yaml; flags override it."""

import sys

from depthtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", "net12", *sys.argv[1:]]))

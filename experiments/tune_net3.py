"""Sweep Net3 (Eigen & Fergus scale 3) on models:/net12@champion with the shipped depthtune/configs/net3.yaml
(or --config FILE); flags override it."""

import sys

from depthtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", "net3", *sys.argv[1:]]))

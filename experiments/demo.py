"""Run the demo (synthetic data -> Net12 -> Net3 -> FCRN) from the shipped depthtune/configs/demo.yaml
or --config FILE."""

import sys

from depthtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))

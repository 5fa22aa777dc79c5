"""Run the demo (synthetic data -> Net12 -> Net3) from experiments/configs/demo.yaml."""

import sys

from depthtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))

"""``python -m cnnlab``: the same command line as ``cnnlab`` (cnnlab.cli.main)."""

import sys

from cnnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m cnnlab``: the same command line as ``cnnlab`` (cnnlab.cli.main)."""

from cnnlab.cli.main import run

if __name__ == "__main__":
    run()

"""``python -m miniq``: the command line."""
import sys

from .cli import main

if __name__ == "__main__":  # children started with spawn import this module too
    sys.exit(main())

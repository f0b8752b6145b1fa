"""The entry point: python -m micrograd_c.bench (see micrograd_c.bench for what it runs)."""
import sys

from micrograd_c.bench import main

if __name__ == "__main__":
    sys.exit(main())

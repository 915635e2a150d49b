"""`python -m wasmml.compiler ...`, or this file run by its path ($TVMCOM)."""
import os
import sys

if __name__ == "__main__":
    if not __package__:
        # run by its path: import the package by its full name, not this
        # directory's modules as top-level ones
        sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from wasmml.compiler.cli import main

    sys.exit(main())

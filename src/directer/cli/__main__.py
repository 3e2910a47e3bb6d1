"""``python -m directer.cli``: the command line."""

from .main import main

if __name__ == "__main__":
    main()

"""Entry point for PyInstaller and `python app.py`: the same as the `automail` command."""

import sys

from automail.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

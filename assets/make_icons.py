"""Regenerate the icon files in assets/ from automail.ui.icons (run: python assets/make_icons.py)."""

from __future__ import annotations

from pathlib import Path

from automail.ui.icons import write_assets

if __name__ == "__main__":
    for path in write_assets(Path(__file__).resolve().parent):
        print(path.name)

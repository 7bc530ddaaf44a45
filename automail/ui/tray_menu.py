"""The tray menu as a Tk popup, for tray icons whose backend has none (pystray's xorg backend)."""

from __future__ import annotations

import tkinter
import tkinter.font
from collections.abc import Sequence
from typing import Any

from .tray import Entry


def build_menu(master: Any, entries: Sequence[Entry]) -> tkinter.Menu:
    """A Tk menu with the tray menu's entries: the same texts, checks, submenus and actions."""
    menu = tkinter.Menu(master, tearoff=False)
    for entry in entries:
        if entry.separator:
            menu.add_separator()
        elif entry.submenu is not None:
            menu.add_cascade(label=entry.label(), menu=build_menu(menu, entry.submenu()))
        elif entry.checked is not None:
            # a variable of its own per entry: Tk shows the check from it, the action toggles for real
            var = tkinter.BooleanVar(menu, value=entry.checked())
            menu.add_checkbutton(label=entry.label(), variable=var, command=entry.action or "")
            menu._automail_vars = [*getattr(menu, "_automail_vars", []), var]  # type: ignore[attr-defined]
        else:
            if entry.action is None:
                menu.add_command(label=entry.label(), state="disabled")
            else:
                menu.add_command(label=entry.label(), command=entry.action)
            if entry.default:  # in bold, as Windows shows the item a click on the icon runs
                menu.entryconfigure("end", font=_bold_menu_font(menu))
    return menu


def _bold_menu_font(menu: tkinter.Menu) -> tkinter.font.Font:
    font = tkinter.font.nametofont("TkMenuFont", root=menu).copy()
    font.configure(weight="bold")
    menu._automail_font = font  # type: ignore[attr-defined]  # Tk drops a font nothing references
    return font


def labels(menu: tkinter.Menu) -> list[str]:
    """The entries' texts ("-" for a separator), for tests and logs."""
    last = menu.index("end")
    out: list[str] = []
    for i in range(0 if last is None else last + 1):
        out.append("-" if menu.type(i) == "separator" else str(menu.entrycget(i, "label")))
    return out


def popup(master: Any, entries: Sequence[Entry], x: int, y: int) -> tkinter.Menu:
    """Open the menu at screen position (x, y), as a right click on a tray icon does elsewhere."""
    menu = build_menu(master, entries)
    menu.tk_popup(x, y)  # it grabs the pointer: a click elsewhere or Esc closes it
    return menu

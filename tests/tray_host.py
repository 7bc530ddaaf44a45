"""A minimal system tray host (XEMBED tray protocol) that ignores the first N dock requests.

Run as ``python -m tests.tray_host --ignore N`` on $DISPLAY. It owns the tray selection, and
embeds an icon (reparent into its panel, 24x24, map) only from request N+1 on; each request
is printed as "ignored WINDOW" or "embedded WINDOW". Real panels lose requests too: one busy
starting up, or restarted while the app runs.
"""

from __future__ import annotations

import argparse
import sys

import Xlib.display
import Xlib.protocol.event
import Xlib.X

REQUEST_DOCK = 0
ICON_SIZE = 24


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ignore", type=int, default=1, help="dock requests to ignore before embedding")
    args = parser.parse_args()
    display = Xlib.display.Display()
    screen = display.screen()
    root = screen.root
    width = ICON_SIZE * 4
    panel = root.create_window(
        screen.width_in_pixels - width, screen.height_in_pixels - ICON_SIZE, width, ICON_SIZE, 0,
        screen.root_depth, background_pixel=0x404040, event_mask=Xlib.X.SubstructureNotifyMask,
    )  # fmt: skip
    panel.set_wm_class("automailTestTray", "automailTestTray")
    panel.map()
    selection = display.intern_atom(f"_NET_SYSTEM_TRAY_S{display.get_default_screen()}")
    opcode = display.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
    manager = display.intern_atom("MANAGER")
    panel.set_selection_owner(selection, Xlib.X.CurrentTime)
    announce = Xlib.protocol.event.ClientMessage(
        window=root, client_type=manager, data=(32, (Xlib.X.CurrentTime, selection, panel.id, 0, 0))
    )
    root.send_event(announce, event_mask=Xlib.X.StructureNotifyMask)
    display.flush()
    print("ready", flush=True)
    requests = embedded = 0
    while True:
        event = display.next_event()
        if event.type != Xlib.X.ClientMessage or event.client_type != opcode:
            continue
        _time, op, icon_id = event.data[1][:3]
        if op != REQUEST_DOCK:
            continue
        requests += 1
        if requests <= args.ignore:
            print("ignored", icon_id, flush=True)
            continue
        icon = display.create_resource_object("window", icon_id)
        icon.change_save_set(Xlib.X.SetModeInsert)  # back to the root window if this host dies
        icon.reparent(panel, embedded * ICON_SIZE, 0)
        icon.configure(width=ICON_SIZE, height=ICON_SIZE)
        icon.map()
        display.flush()
        embedded += 1
        print("embedded", icon_id, flush=True)


if __name__ == "__main__":
    sys.exit(main())

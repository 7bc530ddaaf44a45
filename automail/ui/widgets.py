"""Small shared UI pieces: labelled fields with an error line, dialog base, background jobs."""

from __future__ import annotations

import queue
import sys
import threading
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from tkinter import ttk
from typing import Any, Literal, cast

import customtkinter as ctk
from customtkinter.windows.widgets.scaling.scaling_tracker import ScalingTracker

from . import win32

ERROR_COLOR = ("#C62828", "#FF6B6B")
MUTED_COLOR = ("#5F6B76", "#A0A8B0")
OK_COLOR = ("#2E7D32", "#66BB6A")
PAD = 20  # outer padding of windows and dialogs
ROW_GAP = 6  # vertical gap between form rows
LABEL_WIDTH = 150  # width of the label column in forms, so every form aligns the same way
POLL_MS = 100  # how often a running background job is checked (only while one runs)


def font(size: int = 13, weight: str = "normal") -> ctk.CTkFont:
    """A CTk font of the default family."""
    return ctk.CTkFont(size=size, weight=weight)


def set_text(entry: ctk.CTkEntry, text: str) -> None:
    """Replace an entry's text (keeping a placeholder visible when the new text is empty)."""
    if entry.get():  # "" while the placeholder shows: deleting would erase the placeholder itself
        entry.delete(0, "end")
    if text:
        entry.insert(0, text)


class Field:
    """A label, an entry to its right and a red error line under the entry (hidden when empty)."""

    def __init__(
        self,
        parent: Any,
        row: int,
        label: str,
        *,
        width: int = 280,
        show: str = "",
        placeholder: str = "",
        column: int = 0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """``on_change`` is called on every edit (by typing or paste); such a field shows no placeholder."""
        self.row = row
        self.var: tk.StringVar | None = None
        if on_change is not None:
            self.var = tk.StringVar(parent)
            self.var.trace_add("write", lambda *_a: on_change())
            placeholder = ""
        self.label = ctk.CTkLabel(parent, text=label, anchor="w", width=LABEL_WIDTH)
        self.label.grid(row=row, column=column, sticky="w", padx=(0, 12), pady=(ROW_GAP, 0))
        self.entry = ctk.CTkEntry(
            parent, width=width, show=show, placeholder_text=placeholder or None, textvariable=self.var
        )
        self.entry.grid(row=row, column=column + 1, sticky="ew", pady=(ROW_GAP, 0))
        self.error = ErrorLine(parent)
        self.error.grid(row=row + 1, column=column + 1, sticky="w")
        self.error.grid_remove()

    def get(self) -> str:
        return str(self.entry.get())

    def set(self, text: str) -> None:
        set_text(self.entry, text)

    def show_error(self, text: str) -> None:
        self.error.show(text)

    def clear_error(self) -> None:
        self.error.clear()

    @property
    def error_text(self) -> str:
        return self.error.text


class ErrorLine(ctk.CTkLabel):  # type: ignore[misc]
    """Red text shown under a field; grid_remove'd while empty so forms stay compact."""

    def __init__(self, parent: Any, wraplength: int = 320) -> None:
        super().__init__(
            parent,
            text="",
            text_color=ERROR_COLOR,
            anchor="w",
            justify="left",
            font=font(12),
            wraplength=wraplength,
        )
        self.text = ""

    def show(self, text: str) -> None:
        self.text = text
        self.configure(text=text)
        self.grid()

    def clear(self) -> None:
        self.text = ""
        self.configure(text="")
        self.grid_remove()


def error_text(problem: str, fix: str | None) -> str:
    """What to show under a field for an InputError: the problem without the field name, then the fix."""
    _field, sep, rest = problem.partition(": ")
    text = rest if sep else problem
    text = text[:1].upper() + text[1:]
    # No second full stop after a fix that ends in one or in an ellipsis ("click Settings…").
    end = "" if (fix or text).endswith((".", "…", "!", "?")) else "."
    return f"{text} — {fix}{end}" if fix else f"{text}{end}"


def input_error_text(exc: Any) -> str:
    """The text for an InputError (``.message`` is "field: problem", ``.fix`` the fix)."""
    return error_text(getattr(exc, "message", str(exc)), getattr(exc, "fix", None))


class LaterMixin:
    """after() calls that are cancelled when the window is destroyed (no "invalid command name" noise)."""

    _later_ids: list[str]

    def later(self, ms: int, func: Callable[[], Any]) -> None:
        if not hasattr(self, "_later_ids"):
            self._later_ids = []
        self._later_ids.append(self.after(ms, func))  # type: ignore[attr-defined]

    def cancel_after(self, job: str | None) -> None:
        """Cancel one after() job (None or already run: nothing happens)."""
        if job is not None:
            try:
                self.after_cancel(job)  # type: ignore[attr-defined]
            except tk.TclError:
                pass

    def cancel_later(self) -> None:
        for job in getattr(self, "_later_ids", []):
            try:
                self.after_cancel(job)  # type: ignore[attr-defined]
            except tk.TclError:
                pass
        self._later_ids = []


class AppToplevel(LaterMixin, ctk.CTkToplevel):  # type: ignore[misc]
    """Base of AutoMail's secondary windows: AutoMail's icon, not customtkinter's logo (Windows)."""

    def __init__(self, master: Any, **kw: Any) -> None:
        super().__init__(master, **kw)
        win32.set_toplevel_icon(self, self.later)

    def place_window(self, master: Any, title: str, size: str, minimum: tuple[int, int]) -> None:
        """Title, size and minimum size; transient to the main window only while that one is shown.

        A transient inherits a withdrawn master's state (Tk docs): opened from the tray while the main
        window is hidden, the window must stand alone or it would never appear.
        """
        self.title(title)
        self.geometry(size)
        self.minsize(*minimum)
        if master.winfo_toplevel().state() == "normal":
            self.transient(master.winfo_toplevel())


def secondary_button(parent: Any, text: str, command: Callable[[], Any], width: int = 100) -> ctk.CTkButton:
    """An outlined button for the less important choice (Close, Cancel) beside a filled one."""
    return ctk.CTkButton(
        parent,
        text=text,
        width=width,
        command=command,
        fg_color="transparent",
        border_width=1,
        text_color=("gray10", "gray90"),
    )


def hint(parent: Any, text: str) -> ctk.CTkLabel:
    """A small grey explanation under or beside a field."""
    return ctk.CTkLabel(parent, text=text, text_color=MUTED_COLOR, font=font(12), anchor="w", justify="left")


class Dialog(AppToplevel):
    """Base of AutoMail's dialogs: transient to its master, modal grab, OK/Cancel row.

    Dialogs never block in wait_window: callers pass callbacks, which keeps them drivable
    from tests and keeps the tray responsive.
    """

    def __init__(self, master: Any, title: str, *, modal: bool = True) -> None:
        super().__init__(master)
        self.withdraw()  # map once laid out, so it does not flash at 200x200
        self.title(title)
        self.resizable(False, False)
        self._master_top = master.winfo_toplevel()
        self.transient(self._master_top)
        self.protocol("WM_DELETE_WINDOW", self.cancel)
        self._modal = modal
        self._prev_grab: Any = None
        self.closed = False
        self.body = ctk.CTkFrame(self, fg_color="transparent")
        self.body.pack(side="top", fill="both", expand=True, padx=PAD, pady=(PAD, 8))
        self.general_error = ErrorLine(self, wraplength=460)
        self.buttons = ctk.CTkFrame(self, fg_color="transparent")
        self.buttons.pack(side="bottom", fill="x", padx=PAD, pady=(8, PAD))
        # Esc closes an open drop-down list first, the dialog only when none is open.
        self.bind("<Escape>", lambda _e: None if close_dropdowns() else self.cancel())
        self.later(10, self._present)

    def _present(self) -> None:
        if self.closed:
            return
        self.update_idletasks()
        mx, my = self._master_top.winfo_rootx(), self._master_top.winfo_rooty()
        mw, mh = self._master_top.winfo_width(), self._master_top.winfo_height()
        w, h = self.winfo_reqwidth(), self.winfo_reqheight()
        if self._master_top.winfo_viewable():
            x, y = mx + (mw - w) // 2, my + (mh - h) // 2  # centred on its parent
        else:
            x, y = (self.winfo_screenwidth() - w) // 2, (self.winfo_screenheight() - h) // 2
        self.geometry(f"+{max(x, 0)}+{max(y, 0)}")
        self.deiconify()
        # CTkToplevel may open behind its master (customtkinter#2483): lift again a moment later.
        self.later(200, self._lift)

    def _lift(self) -> None:
        if self.closed:
            return
        if self.state() == "withdrawn":  # hidden again meanwhile (customtkinter's Windows title-bar code did)
            self.deiconify()
        self.lift()
        try:
            self.focus_force()
            if self._modal:
                self._prev_grab = self.grab_current()
                self.grab_set()
        except tk.TclError:  # not viewable yet (no window manager): stay non-modal
            pass

    def add_buttons(self, ok_text: str = "OK", cancel_text: str = "Cancel") -> None:
        """The right-aligned OK / Cancel row."""
        self.cancel_button = ctk.CTkButton(
            self.buttons,
            text=cancel_text,
            width=100,
            command=self.cancel,
            fg_color="transparent",
            border_width=1,
            text_color=("gray10", "gray90"),
        )
        self.cancel_button.pack(side="right")
        self.ok_button = ctk.CTkButton(self.buttons, text=ok_text, width=100, command=self.ok)
        self.ok_button.pack(side="right", padx=(0, 10))
        for key in ("<Return>", "<KP_Enter>"):  # Enter, on the main keys or the keypad, presses OK
            self.bind(key, lambda _e: self.ok())

    def show_general_error(self, text: str) -> None:
        self.general_error.configure(text=text)
        self.general_error.text = text
        self.general_error.pack(side="bottom", fill="x", padx=PAD, before=self.buttons)

    def clear_general_error(self) -> None:
        self.general_error.text = ""
        self.general_error.pack_forget()

    def ok(self) -> None:
        self.close()

    def cancel(self) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.grab_release()
            if self._prev_grab is not None and self._prev_grab.winfo_exists():
                self._prev_grab.grab_set()
        except tk.TclError:
            pass
        self.destroy()

    def destroy(self) -> None:
        self.closed = True
        self.cancel_later()
        super().destroy()


class AskDialog(Dialog):
    """Ask for one line of text; ``validate`` may raise to show an error under the entry."""

    def __init__(
        self,
        master: Any,
        title: str,
        prompt: str,
        on_ok: Callable[[str], None],
        *,
        initial: str = "",
        ok_text: str = "OK",
    ) -> None:
        super().__init__(master, title)
        self._on_ok = on_ok
        self.body.grid_columnconfigure(1, weight=1)
        self.field = Field(self.body, 0, prompt, width=300)
        self.field.set(initial)
        self.add_buttons(ok_text)
        self.later(250, self.field.entry.focus_set)

    def ok(self) -> None:
        try:
            self._on_ok(self.field.get().strip())
        except Exception as exc:
            self.field.show_error(input_error_text(exc))
            return
        self.close()


class ConfirmDialog(Dialog):
    """A yes/no question; ``on_yes`` runs only when confirmed, ``on_no`` (if given) when declined."""

    def __init__(
        self,
        master: Any,
        title: str,
        text: str,
        on_yes: Callable[[], None],
        yes_text: str = "Yes",
        no_text: str = "Cancel",
        on_no: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(master, title)
        self._on_yes = on_yes
        self._on_no = on_no
        ctk.CTkLabel(self.body, text=text, justify="left", anchor="w", wraplength=420).pack(fill="x")
        self.add_buttons(yes_text, no_text)
        if on_no is not None:
            self.cancel_button.configure(command=self.no)

    def ok(self) -> None:
        self.close()
        self._on_yes()

    def no(self) -> None:
        """The second button when it is an answer, not Cancel (Esc and the window's close still cancel)."""
        self.close()
        if self._on_no is not None:
            self._on_no()


class ReadOnlyText(ctk.CTkTextbox):  # type: ignore[misc]
    """A text box the user can select and copy from but not edit."""

    def __init__(self, master: Any, **kw: Any) -> None:
        kw.setdefault("wrap", "word")
        super().__init__(master, **kw)
        self.configure(state="disabled")

    def set(self, text: str) -> None:
        self.configure(state="normal")
        self.delete("1.0", "end")
        self.insert("1.0", text)
        self.configure(state="disabled")

    def get_text(self) -> str:
        return str(self.get("1.0", "end-1c"))


def mode_color(color: Any) -> str:
    """A CTk colour (one name, or a (light, dark) pair) in the current appearance mode."""
    if isinstance(color, (tuple, list)):
        return str(color[1] if ctk.get_appearance_mode().lower() == "dark" else color[0])
    return str(color)


def background_color(widget: Any) -> str:
    """The colour a child of ``widget`` stands on (a transparent CTk frame shows its master's)."""
    while widget is not None:
        try:
            color = widget.cget("fg_color")
        except (ValueError, tk.TclError):  # a plain Tk widget
            return str(widget.cget("background"))
        if color != "transparent":
            return mode_color(color)
        widget = widget.master
    return mode_color(ctk.ThemeManager.theme["CTk"]["fg_color"])


class ProgressLine(tk.Canvas):
    """A determinate progress bar drawn as customtkinter's is, whose ``set`` costs at most one Tcl call.

    CTkProgressBar.set redraws its rounded shapes with ~74 Tcl calls. While a background job runs
    Python, each Tcl call releases the GIL, and getting it back can take the whole switch interval
    (5 ms): one progress update blocked the Tk thread for ~0.5 s and an event-loop pass for up to
    1.3 s (issue 12). Here the bar is two round-capped canvas lines, tagged "track" and "progress";
    ``set`` moves the progress line's end. At 0 the progress line is a dot at the left end, as
    customtkinter draws it. Laid out wider than ``width`` (``sticky="ew"``, ``fill="x"``), the bar
    stretches with its container: a new width redraws both lines.
    """

    def __init__(self, parent: Any, width: int = 220, height: int = 8) -> None:
        scale = widget_scaling(parent)
        self._width, self._height = round(width * scale), max(2, round(height * scale))
        super().__init__(
            parent,
            width=self._width,
            height=self._height,
            background=background_color(parent),
            highlightthickness=0,
            borderwidth=0,
        )
        colors = ctk.ThemeManager.theme["CTkProgressBar"]
        r = self._height / 2
        h = self._height
        for tag, color, end in (
            ("track", colors["fg_color"], self._width - r),
            ("progress", colors["progress_color"], r),
        ):
            self.create_line(r, r, end, r, width=h, capstyle="round", fill=mode_color(color), tags=tag)
        self._value = 0.0
        self._end = round(r)  # the pixel the progress line ends at now
        self.bind("<Configure>", self._resized)

    def _end_at(self, value: float) -> int:
        r = self._height / 2
        return round(r + value * (self._width - 2 * r))

    def _resized(self, event: Any) -> None:
        width = event.width - event.width % 2  # customtkinter draws its shapes on an even width too
        if width == self._width:
            return
        self._width = width
        r = self._height / 2
        self.coords("track", r, r, self._width - r, r)
        self._end = self._end_at(self._value)
        self.coords("progress", r, r, self._end, r)

    def set(self, value: float) -> None:
        """Show ``value`` (0 … 1); draws only when the bar's end moves by a pixel."""
        self._value = max(0.0, min(1.0, value))
        end = self._end_at(self._value)
        if end != self._end:
            r = self._height / 2
            self.coords("progress", r, r, end, r)
            self._end = end

    def get(self) -> float:
        return self._value


# While a job runs Python in a worker thread, the Tk thread waits for the GIL after each Tcl call
# and each Tk callback, up to the switch interval every time (5 ms by default; issue 12 measured
# event-loop passes of over a second that way). A shorter interval while jobs run bounds each wait.
JOB_SWITCH_INTERVAL = 0.001
_jobs_lock = threading.Lock()
_jobs_running = 0
_normal_switch_interval = sys.getswitchinterval()


def _job_counted(delta: int) -> None:
    global _jobs_running, _normal_switch_interval
    with _jobs_lock:
        if _jobs_running == 0 and delta > 0:
            _normal_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(JOB_SWITCH_INTERVAL, _normal_switch_interval))
        _jobs_running += delta
        if _jobs_running == 0:
            sys.setswitchinterval(_normal_switch_interval)


def _run_job(results: queue.Queue[tuple[int, bool, Any]], job: int, work: Callable[[], Any]) -> None:
    _job_counted(1)
    try:
        outcome: tuple[int, bool, Any] = (job, True, work())
    except BaseException as exc:
        outcome = (job, False, exc)
    finally:
        _job_counted(-1)  # before the result is handed over: whoever sees it sees the interval restored
    results.put(outcome)


class Background:
    """Run a function in a worker thread and hand its result to the Tk thread.

    The worker only puts the outcome on a queue; the Tk thread polls it with after()
    while a job runs (no polling when idle, no Tk call from the worker). The worker holds
    no reference to any widget — ``work`` must not either: a Tk object released last in
    another thread aborts Tcl ("async handler deleted by the wrong thread").
    """

    def __init__(self, widget: Any) -> None:
        self._widget = widget
        self._results: queue.Queue[tuple[int, bool, Any]] = queue.Queue()
        self._callbacks: dict[int, tuple[Callable[[Any], None], Callable[[BaseException], None]]] = {}
        self._next = 0

    def run(
        self,
        work: Callable[[], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._next += 1
        self._callbacks[self._next] = (on_done, on_error)
        threading.Thread(
            target=_run_job, args=(self._results, self._next, work), name="automail-ui-job", daemon=True
        ).start()
        if len(self._callbacks) == 1:
            self._widget.after(POLL_MS, self._poll)

    def _poll(self) -> None:
        try:
            if not self._widget.winfo_exists():
                return
        except tk.TclError:
            return
        while True:
            try:
                job, ok, value = self._results.get_nowait()
            except queue.Empty:
                break
            on_done, on_error = self._callbacks.pop(job)
            try:
                (on_done if ok else on_error)(value)
            except tk.TclError:  # the window closed meanwhile
                pass
        if self._callbacks:
            self._widget.after(POLL_MS, self._poll)


@dataclass(frozen=True)
class TableColors:
    """The colours of a ttk table in one appearance mode (ttk knows nothing of customtkinter's modes)."""

    background: str
    text: str
    heading: str
    heading_active: str
    odd_row: str
    selected: str
    selected_text: str
    error: str
    muted: str


TABLE_COLORS = {
    "light": TableColors(
        "#FFFFFF", "#1F2328", "#E8EDF2", "#DCE3EA", "#F6F8FA", "#3B8ED0", "#FFFFFF", "#C62828", "#7A828A"
    ),
    # customtkinter's dark frames are gray17/gray20 (#2B2B2B/#333333); text gray90 (#E5E5E5)
    "dark": TableColors(
        "#2B2B2B", "#E5E5E5", "#3A3F44", "#46505A", "#313336", "#1F6AA5", "#FFFFFF", "#FF6B6B", "#9AA3AC"
    ),
}
TABLE_ROW_HEIGHT = 28
TABLE_FONT_PX = 13
TABLE_HEADING_PAD = (6, 5)
TABLE_MIN_COLUMN = 40


def table_colors() -> TableColors:
    """The table colours of the current appearance mode (fixed at start, see theme.py)."""
    return TABLE_COLORS["dark" if ctk.get_appearance_mode().lower() == "dark" else "light"]


def widget_scaling(widget: Any) -> float:
    """customtkinter's factor for ``widget``: the window's DPI scaling (Windows) × set_widget_scaling."""
    try:
        return float(ScalingTracker.get_widget_scaling(widget))
    except (KeyError, AttributeError):  # a window customtkinter does not track
        return float(ScalingTracker.widget_scaling)


def style_treeview(widget: Any, scale: float | None = None) -> str:
    """Style ttk.Treeview like the CTk widgets around it: scaled and in the appearance mode's colours.

    ttk sizes are plain pixels: row height, fonts (negative sizes are pixels) and paddings are
    multiplied by customtkinter's scaling, which follows the display (150 % on many laptops).
    """
    scale = widget_scaling(widget) if scale is None else scale
    colors = table_colors()
    style = ttk.Style(widget)
    if style.theme_use() != "clam":
        style.theme_use("clam")
    name = "AutoMail.Treeview"
    family = ctk.CTkFont(size=12).cget("family")
    px = -round(TABLE_FONT_PX * scale)
    style.configure(
        name,
        background=colors.background,
        fieldbackground=colors.background,
        foreground=colors.text,
        rowheight=round(TABLE_ROW_HEIGHT * scale),
        borderwidth=0,
        font=(family, px),
    )
    style.configure(
        f"{name}.Heading",
        background=colors.heading,
        foreground=colors.text,
        relief="flat",
        padding=tuple(round(p * scale) for p in TABLE_HEADING_PAD),
        font=(family, px, "bold"),
    )
    style.map(f"{name}.Heading", background=[("active", colors.heading_active)])
    style.map(name, background=[("selected", colors.selected)], foreground=[("selected", colors.selected_text)])
    style.layout(name, [("Treeview.treearea", {"sticky": "nswe"})])  # no sunken border
    return name


_Anchor = Literal["nw", "n", "ne", "w", "center", "e", "sw", "s", "se"]  # Tk's anchors


def table_with_scrollbar(parent: Any, columns: list[tuple[str, str, int, str]]) -> tuple[ttk.Treeview, Any]:
    """A styled Treeview in a bordered frame; columns are (id, heading, width at 100 %, anchor).

    Sizes follow customtkinter's scaling, now and when it changes (a window moved to a monitor
    with other scaling); colours follow the appearance mode.
    """
    colors = (TABLE_COLORS["light"].background, TABLE_COLORS["dark"].background)
    frame = ctk.CTkFrame(parent, border_width=1, corner_radius=6, fg_color=colors)
    style = style_treeview(parent)
    tree = ttk.Treeview(
        frame,
        columns=[c[0] for c in columns],
        show="headings",
        style=style,
        selectmode="extended",
    )
    for cid, heading, _width, anchor in columns:
        side = cast(_Anchor, anchor)
        tree.heading(cid, text=heading, anchor=side)
        tree.column(cid, anchor=side, stretch=cid == columns[-1][0])
    _size_columns(tree, columns, widget_scaling(parent))
    bar = ctk.CTkScrollbar(frame, command=tree.yview)
    tree.configure(yscrollcommand=bar.set)
    tree.tag_configure("odd", background=table_colors().odd_row)
    tree.tag_configure("error", foreground=table_colors().error)
    tree.grid(row=0, column=0, sticky="nsew", padx=(2, 0), pady=2)
    bar.grid(row=0, column=1, sticky="ns", pady=4)
    frame.grid_rowconfigure(0, weight=1)
    frame.grid_columnconfigure(0, weight=1)

    def rescale(widget_factor: float, _window_factor: float) -> None:
        style_treeview(tree, widget_factor)
        _size_columns(tree, columns, widget_factor)

    ScalingTracker.add_widget(rescale, frame)
    frame.bind("<Destroy>", lambda e: ScalingTracker.remove_widget(rescale, frame) if e.widget is frame else None)
    return tree, frame


def _size_columns(tree: ttk.Treeview, columns: list[tuple[str, str, int, str]], scale: float) -> None:
    for cid, _heading, width, _anchor in columns:
        tree.column(cid, width=round(width * scale), minwidth=round(TABLE_MIN_COLUMN * scale))


_UNSET = object()
DISABLED_BUTTON_COLOR = ("#C9D1D9", "#3A3F44")  # a disabled button must not look pressable


def configure_changed(widget: Any, **options: Any) -> bool:
    """Configure only the options whose value changed since the last call; True if any did.

    Every ``configure`` repaints a CTk widget in its normal colours (a hovered button loses its
    hover colour), so a refresh that runs every 250 ms while sending must not repeat unchanged values.
    """
    last: dict[str, Any] = widget.__dict__.setdefault("_automail_last_options", {})
    changed = {k: v for k, v in options.items() if last.get(k, _UNSET) != v}
    if changed:
        widget.configure(**changed)
        last.update(changed)
    return bool(changed)


def set_enabled(button: Any, enabled: bool, **options: Any) -> None:
    """Enable or disable a CTk button so that it also looks it (greyed out), repainting only on change."""
    normal = button.__dict__.setdefault("_automail_fg_color", button.cget("fg_color"))
    fg = options.pop("fg_color", normal)
    configure_changed(
        button, state="normal" if enabled else "disabled", fg_color=fg if enabled else DISABLED_BUTTON_COLOR, **options
    )


_OPEN_DROPDOWNS: set[Any] = set()


def close_dropdowns() -> bool:
    """Close every open OptionMenu list; True if one was open (so Esc closes only the list, not the dialog)."""
    closed = False
    for menu in list(_OPEN_DROPDOWNS):
        _OPEN_DROPDOWNS.discard(menu)
        try:
            if menu.winfo_exists() and menu.winfo_viewable():
                menu.unpost()
                closed = True
        except tk.TclError:
            pass
    return closed


def _click_anywhere(event: Any) -> None:
    # A click outside an open list closes it and still does what it was aimed at (tk_popup swallowed it).
    for menu in list(_OPEN_DROPDOWNS):
        if getattr(menu, "_automail_opening", False) or str(event.widget).startswith(str(menu)):
            continue
        _OPEN_DROPDOWNS.discard(menu)
        try:
            menu.unpost()
        except tk.TclError:
            pass


class OptionMenu(ctk.CTkOptionMenu):  # type: ignore[misc]
    """CTkOptionMenu whose list behaves on Linux as on Windows.

    customtkinter opens the list with ``tk_popup`` on Linux, which grabs the pointer globally: the first
    click after opening it only closes it (swallowed), and Esc does nothing. Here the list is posted
    without a grab; a click elsewhere closes it and acts, Esc closes it.
    """

    def __init__(self, master: Any, **kw: Any) -> None:
        super().__init__(master, **kw)
        menu = self._dropdown_menu
        if sys.platform.startswith("linux"):

            def popup(x: int, y: int) -> None:
                menu.post(x, y)
                _OPEN_DROPDOWNS.add(menu)
                menu._automail_opening = True  # the click that opened it must not close it
                menu.after_idle(lambda: setattr(menu, "_automail_opening", False))

            menu.tk_popup = popup  # what DropdownMenu.open calls on Linux
            root = self.winfo_toplevel()._root()
            if not getattr(root, "_automail_dropdown_bindings", False):
                root._automail_dropdown_bindings = True
                root.bind_all("<Button-1>", _click_anywhere, add="+")
                root.bind_all("<Escape>", lambda _e: close_dropdowns(), add="+")

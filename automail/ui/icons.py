"""Tray and window icons drawn with Pillow: an envelope on a disc coloured by the engine state."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from automail.models import TaskState

# Disc colours per state; "error" also gets a white "!" badge so it reads without colour vision.
STATE_COLORS: dict[str, tuple[int, int, int]] = {
    "stopped": (128, 134, 142),  # grey
    "running": (46, 160, 67),  # green
    "waiting": (230, 162, 20),  # amber
    "error": (214, 48, 49),  # red
}
BRAND_COLOR = (31, 106, 165)  # customtkinter "blue" theme; the app's own icon
ICO_SIZES = [(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]
_ENVELOPE = (255, 255, 255)
_ENVELOPE_LINE = (70, 78, 88)


def state_key(state: TaskState | str | None) -> str:
    """The icon key for a task/engine state ("stopped" for None or unknown values)."""
    value = str(state.value if isinstance(state, TaskState) else state or "stopped")
    return value if value in STATE_COLORS else "stopped"


def draw_icon(
    state: TaskState | str | None = "stopped", size: int = 64, color: tuple[int, int, int] | None = None
) -> Image.Image:
    """An RGBA icon of ``size`` px: coloured disc, white envelope, and a "!" badge for errors."""
    key = state_key(state)
    fill = color or STATE_COLORS[key]
    scale = 4  # draw large and downsample for smooth edges
    s = size * scale
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((0, 0, s - 1, s - 1), fill=(*fill, 255))
    # Envelope: a white rectangle with the flap drawn as a "V".
    left, right = int(s * 0.2), int(s * 0.8)
    top, bottom = int(s * 0.3), int(s * 0.7)
    line = max(1, s // 28)
    d.rectangle((left, top, right, bottom), fill=(*_ENVELOPE, 255), outline=(*_ENVELOPE_LINE, 255), width=line)
    d.line((left, top, s // 2, int(s * 0.52), right, top), fill=(*_ENVELOPE_LINE, 255), width=line, joint="curve")
    if key == "error":
        # Badge at the lower right: red disc with white ring and a white "!".
        r = int(s * 0.24)
        cx, cy = s - r - 1, s - r - 1
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*fill, 255), outline=(255, 255, 255, 255), width=line * 2)
        bar_w = max(2, int(r * 0.32))
        d.rectangle(
            (cx - bar_w // 2, cy - int(r * 0.62), cx + bar_w // 2, cy + int(r * 0.18)), fill=(255, 255, 255, 255)
        )
        dot = bar_w // 2 + 1
        d.ellipse((cx - dot, cy + int(r * 0.38) - dot, cx + dot, cy + int(r * 0.38) + dot), fill=(255, 255, 255, 255))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def app_icon(size: int = 256) -> Image.Image:
    """The application's own icon (window, executable): the envelope on the brand blue."""
    return draw_icon("stopped", size, color=BRAND_COLOR)


def tray_icons(size: int = 64) -> dict[str, Image.Image]:
    """One tray image per state key, drawn once and reused."""
    return {key: draw_icon(key, size) for key in STATE_COLORS}


def write_assets(folder: Path) -> list[Path]:
    """Write automail.png, automail.ico (multi-size) and tray-<state>.png into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    big = app_icon(256)
    big.save(folder / "automail.png")
    big.save(folder / "automail.ico", sizes=ICO_SIZES)
    written += [folder / "automail.png", folder / "automail.ico"]
    for key, image in tray_icons(64).items():
        path = folder / f"tray-{key}.png"
        image.save(path)
        written.append(path)
    return written

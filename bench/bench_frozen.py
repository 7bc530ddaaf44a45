"""The built app (dist/AutoMail): bundle size, and start to a docked tray icon beside `python app.py`.

Each start is a new process under a private Xvfb with trayer as tray host (tests/desktop.py), in a
fresh data folder with one company (so the window stays hidden: a tray-only start); the time runs
from spawn until trayer has reparented the icon window. The app is then asked to quit through the
single-instance channel and must exit with 0. The first start of each is reported apart (colder
file cache); the build itself is timed by .ci/run.

Run: python bench/bench_frozen.py [--runs 5] [--bundle dist/AutoMail]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from automail.ui import instance  # noqa: E402
from tests.desktop import TRAY_CLASSNAME, DesktopSession, missing_tools, wait_for  # noqa: E402


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def docked(session: DesktopSession) -> bool:
    icons = session.windows("--classname", TRAY_CLASSNAME)
    if not icons:
        return False
    tree = session.run(["xwininfo", "-tree", "-id", icons[0]], check=False).stdout
    root = session.run(["xwininfo", "-root"], check=False).stdout.split("Window id:")[1].split()[0]
    parent = [line for line in tree.splitlines() if "Parent window id:" in line]
    return bool(parent) and root not in parent[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (a figure the shared machine's load does not inflate)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_to_tray(session: DesktopSession, argv: list[str], home: Path) -> tuple[float, float]:
    env = session.full_env({"AUTOMAIL_HOME": str(home)})
    started = time.monotonic()
    app = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: docked(session), 30, interval=0.02, what="docked tray icon")
        elapsed, cpu = time.monotonic() - started, cpu_seconds(app.pid)
        instance.quit_running_instance(home, wait_s=20)
        assert app.wait(timeout=10) == 0, "the app did not exit cleanly"
        return elapsed, cpu
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bundle", type=Path, default=REPO / "dist" / "AutoMail")
    args = parser.parse_args()
    if missing := missing_tools():
        print(f"needs {', '.join(missing)}", file=sys.stderr)
        return 1
    if not (args.bundle / "AutoMail").is_file():
        print(f"no built app in {args.bundle}: run `xvfb-run pyinstaller build.spec`", file=sys.stderr)
        return 1
    print(f"bundle {args.bundle}: {folder_mb(args.bundle):.0f} MB, {sum(1 for _ in args.bundle.rglob('*'))} files")
    variants = {
        "frozen (dist/AutoMail/AutoMail gui)": [str(args.bundle / "AutoMail"), "gui"],
        "python app.py gui": [sys.executable, str(REPO / "app.py"), "gui"],
    }
    session = DesktopSession(notifications=False).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, argv in variants.items():
                times, cpus = [], []
                for run in range(args.runs):
                    home = Path(tmp) / f"{len(times)}-{abs(hash(name))}-{run}"
                    subprocess.run([sys.executable, "-m", "automail", "company", "add", "Firma"],
                                   env={**os.environ, "AUTOMAIL_HOME": str(home)}, check=True,
                                   capture_output=True)  # fmt: skip
                    elapsed, cpu = start_to_tray(session, argv, home)
                    times.append(elapsed)
                    cpus.append(cpu)
                print(f"{name}: first {times[0]:.2f} s, median of the rest {statistics.median(times[1:]):.2f} s "
                      f"(min {min(times):.2f}, max {max(times):.2f}, {args.runs} runs); CPU until docked: median "
                      f"{statistics.median(cpus):.2f} s; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    finally:
        session.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

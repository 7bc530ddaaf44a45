"""The log file shared by processes (issue 9, item 3) and uncaught errors reaching it (item 4), for real."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

LINES = 3000  # × ~120 bytes × 2 processes ≈ 36 files of 20 kB: 50 backups hold them all


def log_lines(folder: Path) -> list[str]:
    return [line for f in sorted(folder.glob("automail.log*")) for line in f.read_text("utf-8").splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_processes_log_past_the_rotation_size_without_losing_a_line(tmp_path: Path) -> None:
    """The app and `automail run` write one log at once; each rotates it many times here."""
    script = textwrap.dedent(
        f"""
        import logging, sys
        from pathlib import Path
        from automail.logsetup import setup_logging
        setup_logging(Path(sys.argv[1]), max_bytes=20_000, backup_count=50)
        log = logging.getLogger("automail.test")
        for i in range({LINES}):
            log.info("process %s line %05d %s", sys.argv[2], i, "x" * 60)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), name], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
        )
        for name in ("app", "run")
    ]
    errors = [p.communicate(timeout=100)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert errors == ["", ""]  # no "--- Logging error ---"
    folder = tmp_path / "logs"
    assert len(list(folder.glob("automail.log.*"))) > 10  # it did rotate, many times
    # Rotation is shared: each rotated file was full. Rotating on its own, one process renames away
    # the file the other has just started, leaving a small rotated file (and the other writing into it).
    sizes = {f.name: f.stat().st_size for f in folder.glob("automail.log.*")}
    assert min(sizes.values()) >= 19_000, sizes
    lines = log_lines(folder)
    for name in ("app", "run"):
        numbers = sorted(
            int(line.split(f"process {name} line ")[1][:5]) for line in lines if f"process {name} " in line
        )
        assert numbers == list(range(LINES)), f"{name}: {LINES - len(set(numbers))} lines lost"


def test_uncaught_errors_reach_the_log_without_stderr(tmp_path: Path) -> None:
    """A windowed build has sys.stderr = None: Python's default hooks then print nothing anywhere."""
    script = textwrap.dedent(
        """
        import sys, threading
        from pathlib import Path
        sys.stderr = None
        from automail.logsetup import setup_logging
        setup_logging(Path(sys.argv[1]))
        def work():
            raise RuntimeError("boom in a worker thread")
        t = threading.Thread(target=work, name="automail-job")
        t.start()
        t.join()
        raise ValueError("boom in the main thread")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 1
    text = (tmp_path / "logs" / "automail.log").read_text("utf-8")
    assert "uncaught error in thread automail-job" in text and "RuntimeError: boom in a worker thread" in text
    assert "uncaught error" in text and "ValueError: boom in the main thread" in text

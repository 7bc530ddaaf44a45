"""The "Start at login" switch and the first-start "Install AutoMail?" window, on Xvfb."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from automail.install.common import InstallError, InstallOptions
from automail.install.linux import LinuxInstaller
from automail.ui.autostart_switch import AutostartSwitch
from automail.ui.install_prompt import InstallPrompt
from tests.test_install import fake_bundle
from tests.ui_support import pump

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("collect_tk_garbage")]


@pytest.fixture
def installed(tmp_path: Path) -> LinuxInstaller:
    inst = LinuxInstaller(tmp_path / "user", {})
    inst.install(fake_bundle(tmp_path / "dist"), InstallOptions(autostart=False))
    return inst


def test_switch_turns_start_at_login_on_and_off(root: Any, installed: LinuxInstaller) -> None:
    reports: list[str] = []
    switch = AutostartSwitch(root, reports.append, installer=installed, installed=True)
    switch.pack()
    pump(root)
    assert switch.get() == 0 and switch.cget("text") == "Start at login"
    switch.toggle()
    assert installed.autostart_entry.is_file() and switch.get() == 1
    switch.toggle()
    assert not installed.autostart_entry.exists()
    assert reports == []


def test_switch_reverts_and_reports_when_it_cannot_change(root: Any, installed: LinuxInstaller) -> None:
    class Failing(LinuxInstaller):
        def set_autostart(self, enabled: bool, report: object = None) -> None:
            raise InstallError("cannot write ~/.config/autostart/automail.desktop", fix="free some disk space")

    failing = Failing(installed.link.parent.parent.parent, {})
    reports: list[str] = []
    switch = AutostartSwitch(root, reports.append, installer=failing, installed=True)
    switch.toggle()
    assert switch.get() == 0
    assert reports == [
        "Start at login was not changed: cannot write ~/.config/autostart/automail.desktop — free some disk space"
    ]


def test_switch_is_disabled_until_installed(root: Any, tmp_path: Path) -> None:
    switch = AutostartSwitch(root, print, installer=LinuxInstaller(tmp_path, {}), installed=False)
    assert switch.cget("state") == "disabled" and switch.cget("text") == "Start at login (once installed)"


def test_main_window_has_the_switch(win: Any) -> None:
    assert win.autostart_switch.winfo_ismapped()


def test_install_prompt_installs_with_the_chosen_options(root: Any, tmp_path: Path) -> None:
    calls: list[object] = []
    prompt = InstallPrompt(root, tmp_path / "app", calls.append, lambda never: calls.append(("decline", never)),
                           lambda installed: calls.append(("done", installed)))  # fmt: skip
    pump(root)
    prompt.desktop_icon.deselect()
    prompt.install_button.invoke()
    assert calls == [InstallOptions(autostart=True, desktop_icon=False), ("done", True)]


def test_install_prompt_shows_why_the_install_failed_and_can_still_run_here(root: Any, tmp_path: Path) -> None:
    calls: list[object] = []

    def install(options: InstallOptions) -> None:
        raise InstallError("cannot copy dist to ~/.local/share/AutoMail/app: No space left on device")

    prompt = InstallPrompt(root, tmp_path / "app", install, lambda never: calls.append(("decline", never)),
                           lambda installed: calls.append(("done", installed)))  # fmt: skip
    prompt.install_button.invoke()
    assert "No space left on device" in prompt.error.cget("text") and calls == []
    prompt.never.select()
    prompt.run_button.invoke()
    assert calls == [("decline", True), ("done", False)]

"""Virtual terminals, screenshots and OCR on a real VM with a display."""

from __future__ import annotations

import io
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BootedDriver, run_vmrig, short_tmp, write_test_file
from vmrig import proc
from vmrig.driver import Driver
from vmrig.errors import MachineError, RequestedAssertionFailed
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.spec import Node, Options
from vmrig.testfile import TestSpec
from vmrig.timeouts import TimeoutScale

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def booted_screen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootedDriver]:
    booted = BootedDriver({"screen": Node(graphics=True)}, short_tmp(tmp_path_factory, "screen"))
    machine = booted.machine("screen")
    machine.start()
    try:
        machine.wait_for_unit("getty@tty1.service")
        yield booted
    finally:
        booted.close()


@pytest.fixture
def screen(booted_screen: BootedDriver) -> Machine:
    return booted_screen.machine("screen")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_tty1_has_a_login_prompt_read_without_ocr(screen: Machine, booted_screen: BootedDriver) -> None:
    screen.wait_until_tty_matches(1, r"screen login: ", timeout=120)
    assert "screen: waiting for screen login:  to appear on tty 1" in booted_screen.log()  # NixOS's words
    text = screen.get_tty_text(1)
    rows = text.split("\n")
    assert len(rows) == 25 and all(len(row) == 80 for row in rows)  # NixOS's: full-width rows
    assert "Debian GNU/Linux" in text
    started = time.monotonic()
    screen.wait_until_tty_matches("tty1", "login: ")  # already there: one read
    assert time.monotonic() - started < 5


def test_typing_reaches_the_active_terminal(screen: Machine) -> None:
    screen.wait_until_tty_matches(1, "login: ", timeout=120)
    screen.send_chars("root\n")
    screen.wait_until_tty_matches(1, r"root@screen:~# ", timeout=120)
    screen.send_chars("echo typed-$((6 * 7))\n")
    screen.wait_until_tty_matches(1, r"^typed-42", timeout=60)
    # A long line with Shift on every other key: at NixOS's 10 ms per key an emulated
    # guest lost keys after about 220 of them (a Shift release among them).
    line = "Hello-World_" * 25
    screen.send_chars(f"echo '{line}' > /tmp/typed\n")
    screen.wait_until_succeeds("test -s /tmp/typed", timeout=60)  # one write(): not empty is whole
    assert screen.succeed("cat /tmp/typed") == line + "\n"


def test_a_tty_wait_that_times_out_shows_the_terminal(screen: Machine) -> None:
    screen.config.timeout_scale = TimeoutScale()
    try:
        with pytest.raises(RequestedAssertionFailed, match=r"(?s)action timed out.*tty1 shows:\n.*\| Debian GNU/Linux"):
            screen.wait_until_tty_matches(1, "never-on-the-screen", timeout=1)
    finally:
        screen.config.timeout_scale = TimeoutScale.choose("tcg", None)


def test_switching_terminals_gives_another_login_prompt(screen: Machine) -> None:
    screen.send_key("alt-f2")
    screen.wait_until_tty_matches(2, r"screen login: ", timeout=120)
    screen.dump_tty_contents(2)
    screen.wait_until_succeeds("journalctl -t tty2 | grep -q 'screen login'", timeout=60)


def test_screenshot_is_a_png_of_the_text_screen(screen: Machine) -> None:
    path = screen.screenshot("tty")
    assert path == screen.out_dir / "tty.png"
    assert png_size(path) == (720, 400)  # VGA text mode, 80x25 characters of 9x16 pixels
    elsewhere = screen.screenshot(str(screen.out_dir / "sub" / "named.png"))
    assert png_size(elsewhere) == (720, 400)


def test_ocr_reads_the_text_console(screen: Machine) -> None:
    screen.send_key("alt-f2")
    screen.wait_until_tty_matches(2, "login: ", timeout=120)
    assert "login" in screen.get_screen_text()
    variants = screen.get_screen_text_variants()
    assert len(variants) == 3 and any("Debian" in text for text in variants)
    started = time.monotonic()
    screen.wait_for_text("login", timeout=120)
    assert time.monotonic() - started < 60


def test_wait_for_text_timing_out_says_what_it_read_and_leaves_a_png(screen: Machine) -> None:
    read = r"(?s)waiting for 'xyzzy plugh'.*the last OCR read:\n.*login"
    with pytest.raises(RequestedAssertionFailed, match=read) as caught:
        screen.wait_for_text("xyzzy plugh", timeout=2)
    shot = screen.out_dir / "screen-wait_for_text.png"
    assert f"the last screenshot: {shot}" in str(caught.value)
    assert png_size(shot) == (720, 400)


def test_a_machine_without_a_display_says_how_to_get_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    booted = BootedDriver({"plain": Node(graphics=False)}, short_tmp(tmp_path_factory, "nodisplay"))
    try:
        with pytest.raises(MachineError, match="has no display; give its node graphics=True"):
            booted.machine("plain").screenshot("nothing")
    finally:
        booted.close()


def test_a_failing_screen_test_leaves_its_screen_and_terminal(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        """
        from vmrig import Node
        nodes = {"box": Node()}
        test_script = '''
        box.wait_until_tty_matches(1, "login: ")
        box.screenshot("before")
        box.succeed("false")
        '''
        """,
    )
    out = vm_tmp / "out"
    # -o relative to the working directory, as a user types it (QEMU itself runs elsewhere)
    result = run_vmrig("run", "--no-serial", "-o", "out", path, tmpdir=vm_tmp, cwd=vm_tmp)
    assert result.returncode == 1, result.stderr[-3000:]
    assert png_size(out / "before.png") == (720, 400)  # the script's screenshot method gave it a display
    assert png_size(out / "box-failure.png") == (720, 400)
    assert "box login:" in (out / "box-tty.txt").read_text()
    assert "saved for the failure:" in result.stderr and "box-tty.txt" in result.stderr


def test_a_headless_run_has_no_vnc(screen: Machine) -> None:
    command = Path(f"/proc/{screen.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-vnc" not in command and command[command.index(b"-display") + 1] == b"none"


def test_an_interactive_run_shows_the_screen_on_loopback_vnc(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    tmp = short_tmp(tmp_path_factory, "vnc")
    stream = io.StringIO()
    spec = TestSpec(
        name="vnc",
        path=tmp / "vnc.py",
        nodes={"screen": Node(graphics=True), "plain": Node()},
        options=Options(),
        script="",
        script_path=str(tmp / "vnc.py"),
        script_first_line=1,
    )
    driver = Driver(spec, logger=Logger(stream, color=False), out_dir=tmp, tmp_dir=tmp, interactive=True)
    try:
        driver.setup()
        found = re.findall(r"screen: VNC on 127\.0\.0\.1:(\d+)", stream.getvalue())
        assert len(found) == 1, stream.getvalue()
        assert "plain:" not in stream.getvalue().split("screens")[-1]  # no display, nothing shown
        port = int(found[0])
        machine = next(m for m in driver.machines if m.name == "screen")
        machine.start()
        banner = b""
        deadline = time.monotonic() + 60
        while not banner and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                    banner = client.recv(12)
            except OSError:
                time.sleep(0.2)
        assert banner.startswith(b"RFB 003."), banner
        listening = proc.run(["ss", "-ltnH", f"sport = :{port}"]).stdout.decode()
        addresses = {line.split()[3] for line in listening.splitlines() if line.strip()}
        assert addresses == {f"127.0.0.1:{port}"}, listening
    finally:
        driver.cleanup()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass

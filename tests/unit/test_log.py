from __future__ import annotations

import io
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vmrig.log import Logger, LogLevel


def make_logger() -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    return Logger(stream, color=False), stream


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_message_and_machine_prefix() -> None:
    logger, stream = make_logger()
    logger.log("hello")
    logger.info("starting", {"machine": "node1"})
    logger.log("no machine here", {"other": "x"})
    assert lines_of(stream) == ["hello", "node1: starting", "no machine here"]


def test_nested_blocks_indent_and_report_their_time() -> None:
    logger, stream = make_logger()
    with logger.nested("outer"):
        logger.log("in outer")
        with logger.nested("inner", {"machine": "node1"}):
            logger.log("in inner")
    logger.log("after")
    lines = lines_of(stream)
    assert lines[0] == "outer"
    assert lines[1] == "  in outer"
    assert lines[2] == "  node1: inner"
    assert lines[3] == "    in inner"
    assert re.fullmatch(r"  node1: \(finished: inner, in \d+\.\d\d seconds\)", lines[4])
    assert re.fullmatch(r"\(finished: outer, in \d+\.\d\d seconds\)", lines[5])
    assert lines[6] == "after"


def test_nested_prints_finished_line_and_reraises() -> None:
    logger, stream = make_logger()
    with pytest.raises(ValueError, match="boom"), logger.nested("block"):
        raise ValueError("boom")
    logger.log("back at top")
    lines = lines_of(stream)
    assert lines[1].startswith("(finished: block, in ")
    assert lines[2] == "back at top"


def test_multiline_messages_indent_every_line() -> None:
    logger, stream = make_logger()
    with logger.nested("block"):
        logger.log("one\ntwo")
    assert lines_of(stream)[1:3] == ["  one", "  two"]


def test_no_color_when_stream_is_not_a_tty() -> None:
    logger = Logger(io.StringIO())
    assert not logger.color
    logger.alert("bad")
    assert "\x1b" not in logger.stream.getvalue()  # type: ignore[attr-defined]


def test_color_on_a_tty_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream = FakeTty()
    logger = Logger(stream)
    assert logger.color
    logger.alert("bad")
    logger.warning("careful")
    assert "\x1b[31mbad\x1b[0m" in stream.getvalue()
    assert "\x1b[33mcareful\x1b[0m" in stream.getvalue()

    monkeypatch.setenv("NO_COLOR", "1")
    assert not Logger(FakeTty()).color
    assert Logger(FakeTty()).red == ""


def test_the_scripts_log_as_nixos_logger() -> None:
    logger, stream = make_logger()
    logger.debug("hidden")
    logger.info("shown", attributes={"machine": "server"})
    logger.set_log_level(LogLevel.DEBUG)
    logger.debug("details")
    logger.set_log_level(LogLevel.ERROR)
    logger.info("quiet")
    logger.warning("quiet too")
    assert lines_of(stream) == ["server: shown", "details"]
    # As NixOS's CompositeLogger.error: the test ends with status 1.
    with pytest.raises(SystemExit) as exit_info:
        logger.error("cannot go on")
    assert exit_info.value.code == 1
    assert lines_of(stream)[-1] == "cannot go on"


def test_explicit_color_overrides_detection() -> None:
    assert Logger(io.StringIO(), color=True).color
    assert not Logger(FakeTty(), color=False).color


def test_default_stream_is_stderr_at_construction(capsys: pytest.CaptureFixture[str]) -> None:
    Logger(color=False).log("to stderr")
    assert capsys.readouterr().err == "to stderr\n"


def test_serial_lines_and_toggle() -> None:
    logger, stream = make_logger()
    logger.log_serial("Booting Linux", "node1")
    logger.print_serial_logs(False)
    logger.log_serial("hidden", "node1")
    logger.print_serial_logs(True)
    logger.log_serial("shown again", "node2")
    assert lines_of(stream) == ["node1 # Booting Linux", "node2 # shown again"]


def test_serial_lines_are_dimmed_with_color() -> None:
    stream = io.StringIO()
    Logger(stream, color=True).log_serial("x", "node1")
    assert stream.getvalue() == "\x1b[2mnode1 # x\x1b[0m\n"


def test_log_test_error_prefixes_every_line() -> None:
    logger, stream = make_logger()
    logger.log_test_error("first\nsecond")
    assert lines_of(stream) == ["!!! first", "!!! second"]


def test_subtest_failure_is_logged_and_reraised() -> None:
    logger, stream = make_logger()
    with pytest.raises(AssertionError), logger.subtest("check web server"):
        raise AssertionError("no answer")
    lines = lines_of(stream)
    assert lines[0] == "subtest: check web server"
    assert lines[1] == '  !!! Test "check web server" failed with error: "no answer"'
    assert lines[2].startswith("(finished: subtest: check web server, in ")


def test_subtest_success_prints_no_error() -> None:
    logger, stream = make_logger()
    with logger.subtest("fine"):
        logger.log("working")
    assert "!!!" not in stream.getvalue()


def read_junit(path: Path) -> ET.Element:
    suites = ET.parse(path).getroot()
    suite = suites.find("testsuite")
    assert suite is not None
    return suite


def cases_by_name(suite: ET.Element) -> dict[str, ET.Element]:
    return {case.attrib["name"]: case for case in suite.findall("testcase")}


def test_junit_report(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    logger, _ = make_logger()
    logger.junit(report, "hello world")
    logger.log("before subtests")
    logger.print_serial_logs(False)
    logger.log_serial("serial in main", "node1")
    logger.print_serial_logs(True)
    with logger.subtest("good"):
        logger.log("all fine")
        logger.log_serial("serial in good", "node1")
    with pytest.raises(RuntimeError), logger.subtest("bad"):
        logger.log("about to fail")
        raise RuntimeError("it broke")
    logger.log("after subtests")
    logger.write_junit()

    suite = read_junit(report)
    assert suite.attrib["name"] == "hello world"
    assert suite.attrib["tests"] == "3"
    assert suite.attrib["failures"] == "1"
    cases = cases_by_name(suite)
    assert list(cases) == ["main", "good", "bad"]
    for case in cases.values():
        assert float(case.attrib["time"]) >= 0

    main_out = cases["main"].findtext("system-out") or ""
    assert "before subtests" in main_out
    assert "node1 # serial in main" in main_out  # recorded although not printed
    assert "after subtests" in main_out
    assert "all fine" not in main_out
    assert cases["main"].find("failure") is None

    good_out = cases["good"].findtext("system-out") or ""
    assert "all fine" in good_out
    assert "node1 # serial in good" in good_out
    assert cases["good"].find("failure") is None

    failure = cases["bad"].find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "it broke"
    assert "RuntimeError: it broke" in (failure.text or "")
    assert "about to fail" in (cases["bad"].findtext("system-out") or "")


def test_junit_times_measure_the_subtests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("vmrig.log.time.monotonic", lambda: clock[0])
    report = tmp_path / "junit.xml"
    logger, _ = make_logger()
    logger.junit(report, "suite")
    clock[0] += 1.0
    with logger.subtest("outer"):
        clock[0] += 2.0
        with logger.subtest("inner"):
            clock[0] += 4.0
    clock[0] += 8.0
    logger.write_junit()

    suite = read_junit(report)
    cases = cases_by_name(suite)
    assert float(cases["outer"].attrib["time"]) == pytest.approx(6.0)
    assert float(cases["inner"].attrib["time"]) == pytest.approx(4.0)
    assert float(cases["main"].attrib["time"]) == pytest.approx(9.0)  # outside the subtests
    assert float(suite.attrib["time"]) == pytest.approx(15.0)


def test_mark_failed_marks_the_current_case(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    logger, _ = make_logger()
    logger.junit(report, "suite")
    logger.mark_failed("global timeout reached")
    with logger.subtest("marked"):
        logger.mark_failed("something went wrong here")
    logger.write_junit()

    cases = cases_by_name(read_junit(report))
    main_failure = cases["main"].find("failure")
    assert main_failure is not None
    assert main_failure.attrib["message"] == "global timeout reached"
    sub_failure = cases["marked"].find("failure")
    assert sub_failure is not None
    assert sub_failure.attrib["message"] == "something went wrong here"


def test_junit_strips_characters_illegal_in_xml(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    logger, _ = make_logger()
    logger.junit(report, "suite")
    logger.log_serial("a\x00b\x07c\x1b[0;32mgreen\x1b[0m\ttab\ud800\ufffe\uffffend", "node1")
    with pytest.raises(ValueError), logger.subtest("bad\x01name"):
        raise ValueError("broken\x00message")
    logger.write_junit()

    cases = cases_by_name(read_junit(report))
    assert "node1 # abcgreen\ttabend" in (cases["main"].findtext("system-out") or "")
    failure = cases["badname"].find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "brokenmessage"


def test_write_junit_is_repeatable_and_a_no_op_when_disabled(tmp_path: Path) -> None:
    logger, _ = make_logger()
    logger.write_junit()  # not enabled: nothing to do, no error
    report = tmp_path / "sub" / "junit.xml"
    logger.junit(report, "suite")
    logger.log("one")
    logger.write_junit()
    logger.log("two")
    logger.close()
    out = cases_by_name(read_junit(report))["main"].findtext("system-out") or ""
    assert "one" in out
    assert "two" in out
    assert [p.name for p in report.parent.iterdir()] == ["junit.xml"]


def test_serial_lines_from_threads_never_break_lines() -> None:
    logger, stream = make_logger()
    stop = threading.Event()

    def serial_reader(machine: str) -> None:
        count = 0
        while not stop.is_set():
            logger.log_serial(f"line {count} " + "x" * 50, machine)
            count += 1

    threads = [threading.Thread(target=serial_reader, args=(f"node{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(200):
            with logger.nested(f"block {round_}"):
                logger.log(f"message {round_}\nsecond line {round_}")
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    allowed = re.compile(
        r"( {0,2})(node\d # line \d+ x{50}|block \d+|message \d+|second line \d+"
        r"|\(finished: block \d+, in \d+\.\d\d seconds\))"
    )
    lines = lines_of(stream)
    assert len(lines) > 800
    for line in lines:
        assert allowed.fullmatch(line), repr(line)


def test_an_interrupted_subtest_records_why(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    logger, _ = make_logger()
    logger.junit(report, "suite")
    with pytest.raises(KeyboardInterrupt), logger.subtest("ctrl-c"):
        raise KeyboardInterrupt
    # The global timeout's SIGINT can end a command before the released machine's error does.
    logger.interrupting("QEMU was stopped because the global timeout of 60 seconds was reached")
    with pytest.raises(KeyboardInterrupt), logger.subtest("sleeping"):
        raise KeyboardInterrupt
    logger.write_junit()

    cases = cases_by_name(read_junit(report))
    ctrl_c = cases["ctrl-c"].find("failure")
    assert ctrl_c is not None
    assert ctrl_c.attrib["message"] == "interrupted (KeyboardInterrupt)"
    sleeping = cases["sleeping"].find("failure")
    assert sleeping is not None
    assert sleeping.attrib["message"] == "QEMU was stopped because the global timeout of 60 seconds was reached"

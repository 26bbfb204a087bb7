"""`vmrig`: the command line. Thin: it loads a test file and hands it to the driver.

Exit status: 0 the test passed, 1 it failed (or a VM broke), 2 bad usage or a
test file that cannot run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from vmrig import repl, ssh
from vmrig.driver import Driver
from vmrig.errors import (
    HostCommandFailed,
    HostToolMissing,
    ImageBuildError,
    MachineError,
    Terminated,
    TestFileError,
    UsageError,
    VmrigError,
)
from vmrig.image import store as images_module
from vmrig.log import Logger
from vmrig.runenv import RunEnvironment
from vmrig.testfile import TestSpec, load_test_file

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class EnvDefault(argparse.Action):
    """An option whose default comes from an environment variable."""

    def __init__(self, envvar: str, required: bool = False, default: object = None, **kwargs: object) -> None:
        if envvar in os.environ:
            default = os.environ[envvar]
            required = False
        super().__init__(default=default, required=required, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)


def writable_dir(value: str) -> Path:
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{value} is not writable")
    return path


def positive_seconds(value: str) -> float:
    seconds = float(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmrig",
        description="Run NixOS-style integration tests in QEMU virtual machines built from Debian.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every host command vmrig runs")
    # -v after the command too (`vmrig run -v test.py`); SUPPRESS keeps the
    # main parser's value when the command's own -v is absent.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log every host command vmrig runs"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        parents=[verbose],
        help="build the images a test needs, boot its machines and run its script",
        description="Build what is missing, boot the test's machines and run its test script. "
        "Exit status: 0 passed, 1 failed, 2 bad usage or test file.",
    )
    run.add_argument("testfile", type=Path, help="the test file (a Python module defining nodes and test_script)")
    run.add_argument(
        "-K",
        "--keep-vm-state",
        "--keep-machine-state",  # newer NixOS's name
        dest="keep_vm_state",
        action="store_true",
        help="keep $TMPDIR/vm-state-<node> from the last run and boot from it (default: reset it)",
    )
    run.add_argument(
        "--global-timeout",
        type=positive_seconds,
        action=EnvDefault,
        envvar="globalTimeout",
        help="seconds after which the whole test is stopped (default: the test's options, 3600)",
    )
    run.add_argument(
        "-o",
        "--output-directory",
        dest="output_directory",
        type=writable_dir,
        default=Path.cwd(),
        help="where screenshots, copy_from_vm results and the JUnit report go (default: the working directory)",
    )
    run.add_argument(
        "--junit-xml",
        metavar="PATH",
        help="write a JUnit XML report (one case per subtest) to PATH, relative to the output directory",
    )
    run.add_argument(
        "--no-serial",
        action="store_true",
        help="do not print the machines' serial console lines",
    )
    run.add_argument(
        "--no-snapshots",
        action="store_true",
        help="boot every machine from scratch: neither restore nor save booted snapshots "
        "(they are never used with --keep-vm-state)",
    )
    run.add_argument(
        "-I",
        "--interactive",
        action="store_true",
        help="do not run the script: open a Python prompt with the machines as variables "
        "(start_all(), test_script(), node.shell_interact()); the test file's interactive settings apply",
    )
    run.add_argument(
        "--no-interactive-config",
        action="store_true",
        help="with --interactive: ignore the test file's `interactive` overrides (the plain configuration)",
    )
    run.add_argument(
        "--debug-on-failure",
        action="store_true",
        help="when the script fails, stop at the failing line with a debugger prompt, machines still running",
    )
    run.set_defaults(handler=command_run)

    ssh_command = commands.add_parser(
        "ssh",
        parents=[verbose],
        help="log into a node of a running session that has the SSH backdoor",
        description="Log into NODE of the vmrig session running with Options(ssh_backdoor=True) "
        "(found through $TMPDIR/vm-state-NODE), or run COMMAND there.",
    )
    ssh_command.add_argument("node", help="the node's name")
    ssh_command.add_argument("remote_command", nargs=argparse.REMAINDER, metavar="COMMAND", help="run this instead")
    ssh_command.set_defaults(handler=command_ssh)

    build = commands.add_parser("build", parents=[verbose], help="only build the images a test needs")
    build.add_argument("testfile", type=Path, help="the test file")
    build.add_argument(
        "-I",
        "--interactive",
        action="store_true",
        help="the images of the test file's interactive configuration (what `run --interactive` boots)",
    )
    build.set_defaults(handler=command_build, no_interactive_config=False)

    check = commands.add_parser(
        "check", parents=[verbose], help="check a test file and its script without booting anything"
    )
    check.add_argument("testfile", type=Path, help="the test file")
    check.add_argument(
        "-I", "--interactive", action="store_true", help="with the test file's interactive overrides merged in"
    )
    check.set_defaults(handler=command_check, no_interactive_config=False)

    gc = commands.add_parser("gc", parents=[verbose], help="remove cached images that have not been used for a while")
    gc.add_argument(
        "--older-than",
        type=float,
        default=14.0,
        metavar="DAYS",
        help="remove images unused for this many days (default: 14)",
    )
    gc.add_argument("--all", action="store_true", help="remove every cached image")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.set_defaults(handler=command_gc)
    return parser


def _load(args: argparse.Namespace, logger: Logger) -> tuple[TestSpec, Driver]:
    interactive = getattr(args, "interactive", False)
    spec = load_test_file(args.testfile, interactive=interactive and not args.no_interactive_config)
    out_dir = getattr(args, "output_directory", None) or Path.cwd()
    driver = Driver(
        spec,
        logger=logger,
        out_dir=out_dir,
        keep_vm_state=getattr(args, "keep_vm_state", False),
        global_timeout=getattr(args, "global_timeout", None),
        interactive=interactive,
        debug_on_failure=getattr(args, "debug_on_failure", False),
        snapshots=not getattr(args, "no_snapshots", False),
    )
    driver.check_script()
    return spec, driver


def command_check(args: argparse.Namespace, logger: Logger) -> int:
    spec, _driver = _load(args, logger)
    logger.log(f"{spec.path}: {len(spec.nodes)} node(s), script checked")
    return EXIT_PASSED


def command_build(args: argparse.Namespace, logger: Logger) -> int:
    _spec, driver = _load(args, logger)
    driver.build_images()
    return EXIT_PASSED


def command_run(args: argparse.Namespace, logger: Logger) -> int:
    spec, driver = _load(args, logger)
    if args.junit_xml:
        logger.junit(args.output_directory / args.junit_xml, spec.name)
    if args.no_serial:
        logger.print_serial_logs(False)
    if args.keep_vm_state:
        logger.log("keeping the machines' state from the last run ($TMPDIR/vm-state-<node>)")
    else:
        logger.log("Machine state will be reset. To keep it, pass --keep-vm-state")
    if args.interactive:
        # No global timeout here: the prompt waits for its user as long as it takes.
        with driver:
            driver.setup()
            repl.interact(driver.test_symbols(), Path.cwd() / repl.HISTORY_FILE, logger)
        return EXIT_PASSED
    try:
        with driver:
            driver.setup()
            passed = driver.run_tests()
    finally:
        logger.write_junit()
    return EXIT_PASSED if passed else EXIT_FAILED


def command_ssh(args: argparse.Namespace, logger: Logger) -> int:
    del logger
    remote_command = list(args.remote_command)
    if remote_command[:1] == ["--"]:
        remote_command = remote_command[1:]
    return ssh.run_ssh(args.node, RunEnvironment.from_environ(os.environ).tmp_dir, remote_command)


def command_gc(args: argparse.Namespace, logger: Logger) -> int:
    store = images_module.ImageStore(RunEnvironment.from_environ(os.environ).cache_dir)
    days = 0.0 if args.all else args.older_than
    removed = store.gc(days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        logger.log(f"{verb} {path}")
    logger.log(f"{verb} {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'} from {store.root}")
    return EXIT_PASSED


def _terminate_on_signal(signum: int, _frame: FrameType | None) -> None:
    # Unwinds through the driver's cleanup, which stops every VM.
    raise Terminated(signum, signal.Signals(signum).name)


def failure(error: VmrigError) -> tuple[str, int]:
    """The one message, and the exit status, for an error that ends a command."""
    if isinstance(error, TestFileError | UsageError | HostToolMissing | HostCommandFailed):
        return f"error: {error}", EXIT_USAGE
    if isinstance(error, ImageBuildError):
        return f"image build failed: {error}", EXIT_FAILED
    if isinstance(error, MachineError):
        return f"machine error: {error}", EXIT_FAILED
    return f"error: {error}", EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(name)s: %(message)s",
    )
    logger = Logger()
    signal.signal(signal.SIGTERM, _terminate_on_signal)
    signal.signal(signal.SIGHUP, _terminate_on_signal)
    started = time.monotonic()
    try:
        status: int = args.handler(args, logger)
    except VmrigError as error:
        message, status = failure(error)
        logger.log_test_error(message)
        return status
    except KeyboardInterrupt:
        logger.log_test_error("interrupted")
        return 130
    if args.command == "run" and args.interactive:
        logger.log(f"interactive session ended, machines stopped ({time.monotonic() - started:.1f} s)")
    elif args.command == "run":
        outcome = "passed" if status == EXIT_PASSED else "FAILED"
        logger.log(f"test {outcome} ({time.monotonic() - started:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())

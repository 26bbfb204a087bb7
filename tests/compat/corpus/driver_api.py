"""Odds and ends of the driver API, the way NixOS scripts use them.

NixOS behaviours exercised: node names with an underscore (`client_a`) and
a dash (`web-1`, the script variable `web_1`); `wait_for_unit("network.target")`
and `wait_for_unit("multi-user.target")`; `get_unit_info` and
`get_unit_property`; `systemctl(...)` returning `(status, output)`;
`t.assertEqual`; `retry(fn, timeout=...)` and the newer
`retry(fn, timeout_seconds=...)`; `timeout=` given as a `datetime.timedelta`
(newest NixOS driver); `subtest`; `wait_for_open_unix_socket` on a socket
unit; `copy_from_vm` and its newer name `copy_from_machine`, then reading the
copy under `os.environ["out"]` with `pathlib`; `execute` with
`check_return=False`; `succeed` of several commands at once; `machines`;
QMP through `machine.qmp_client` (`send`, `events`, `wait_for_event`,
and `QMPAPIError` imported from NixOS's `test_driver.machine.qmp`);
commands every NixOS machine has (getfacl, ping, sudo, strace, rsync,
mkpasswd, GNU awk, fgconsole) and its static device nodes (/dev/net/tun).

Debian packages standing in: `python3` (a web server as a Service),
`curl`; the socket unit is plain systemd (Accept=yes with a template
service, as `systemd.sockets` + `systemd.services."hello@"` would define).

Debian differences: none expected. Parts that need newer vmrig support
(underscore node names, `copy_from_machine`, `retry(timeout_seconds=)`,
timedelta timeouts) may be rejected by older vmrig versions.
"""

from vmrig import Node, Service

HELLO_SOCKET = """\
[Unit]
Description=Hello over a Unix socket

[Socket]
ListenStream=/run/hello.sock
Accept=yes

[Install]
WantedBy=sockets.target
"""

HELLO_SERVICE = """\
[Unit]
Description=Hello connection %i

[Service]
ExecStart=/bin/echo hello from the socket
StandardInput=socket
StandardOutput=socket
"""

nodes = {
    "web-1": Node(
        packages=["python3"],
        files={"/srv/www/index.html": "web-1 says hi\n", "/srv/report.txt": "report line 1\nreport line 2\n"},
        services={
            "web": Service(
                exec_start="/usr/bin/python3 -m http.server 8080 --bind :: --directory /srv/www",
                description="Test web server",
                after=["network.target"],
            ),
            "hello.socket": HELLO_SOCKET,
            "hello@": HELLO_SERVICE,
        },
    ),
    "client_a": Node(packages=["curl"]),
}

test_script = """
import os
from datetime import timedelta
from pathlib import Path

start_all()
web_1.wait_for_unit("network.target")
web_1.wait_for_unit("multi-user.target")
client_a.wait_for_unit("multi-user.target", timeout=timedelta(minutes=2))

with subtest("machines are named after their nodes"):
    t.assertEqual(sorted(m.name for m in machines), ["client_a", "web-1"])
    t.assertEqual(web_1.succeed("hostname").strip(), "web-1")
    # no assertion on client_a's host name: systemd accepts only letters, digits,
    # '-' and '.' in a host name, so what `hostname` says for "client_a" is vmrig's choice
    log.info(f"client_a's host name: {client_a.succeed('hostname').strip()}")

with subtest("unit information"):
    web_1.wait_for_unit("web")
    info = web_1.get_unit_info("web")
    t.assertEqual(info["ActiveState"], "active")
    t.assertEqual(info["Description"], "Test web server")
    t.assertEqual(web_1.get_unit_property("web", "SubState"), "running")
    status, output = web_1.systemctl("is-active web")
    t.assertEqual(status, 0)
    t.assertEqual(output.strip(), "active")
    status, _ = web_1.systemctl("is-active no-such-unit")
    t.assertNotEqual(status, 0)

with subtest("execute does not raise"):
    status, output = web_1.execute("echo out; exit 3", check_return=False)
    t.assertEqual(output, "out\\n")
    status, output = web_1.execute("exit 3")
    t.assertEqual(status, 3)
    t.assertEqual(web_1.succeed("echo a", "echo b"), "a\\nb\\n")

with subtest("the client reaches web-1 by name"):
    web_1.wait_for_open_port(8080, timeout=timedelta(seconds=60))
    t.assertEqual(client_a.succeed("curl --fail --silent http://web-1:8080/").strip(), "web-1 says hi")

with subtest("retry, old and new style"):
    def served(last_try):
        status, _ = client_a.execute("curl --fail --silent http://web-1:8080/")
        if last_try:
            log.info("the web server still does not answer")
        return status == 0

    retry(served, timeout=30)
    retry(served, timeout_seconds=30)

with subtest("a socket unit answers on a Unix socket"):
    web_1.wait_for_unit("hello.socket")
    web_1.wait_for_open_unix_socket("/run/hello.sock", timeout=30)
    t.assertEqual(web_1.succeed("nc -U -N /run/hello.sock </dev/null").strip(), "hello from the socket")

with subtest("files copied out of a machine land in the output directory"):
    web_1.copy_from_vm("/srv/report.txt")
    copied = Path(os.environ.get("out", ".")) / "report.txt"
    t.assertEqual(copied.read_text().splitlines(), ["report line 1", "report line 2"])
    web_1.succeed("mkdir -p /tmp/results && echo 42 > /tmp/results/answer")
    web_1.copy_from_machine("/tmp/results", "from-web-1")
    answer = Path(os.environ.get("out", ".")) / "from-web-1" / "results" / "answer"
    t.assertEqual(answer.read_text().strip(), "42")

with subtest("QMP as NixOS scripts reach it"):
    from test_driver.machine.qmp import QMPAPIError

    assert web_1.qmp_client is not None
    t.assertEqual(web_1.qmp_client.send("query-status")["return"]["status"], "running")
    try:
        web_1.qmp_client.send("this-command-does-not-exist")
    except QMPAPIError as error:
        t.assertEqual(error.class_name, "CommandNotFound")
    else:
        raise AssertionError("QEMU accepted a command it does not have")
    # a restore's own events (its RESUME) are not left for the script
    t.assertNotIn("RESUME", [event["event"] for event in web_1.qmp_client.events()])
    web_1.qmp_client.send("stop")
    web_1.qmp_client.send("cont")
    seen = []
    while "RESUME" not in seen:
        seen.append(web_1.qmp_client.wait_for_event(timeout=30)["event"])
    t.assertIn("STOP", seen)
    t.assertEqual(web_1.succeed("echo still here"), "still here\\n")

with subtest("what a NixOS machine has without asking"):
    # Tools of NixOS's core and default packages, nothing in the node's packages.
    web_1.succeed("getfacl / && ping -c 1 -W 5 client_a && sudo -u nobody true && strace -V && rsync --version")
    web_1.succeed("echo secret | mkpasswd -s && awk --version | grep -q GNU && fgconsole")
    # Static device nodes, made before their modules load.
    web_1.succeed("test -c /dev/net/tun && test -c /dev/loop-control")
"""

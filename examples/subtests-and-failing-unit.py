"""Several steps in subtests; one service is expected to fail, and the test checks that it does.

Shows: users, file owners and modes, a oneshot unit, a unit written as raw
unit text, `t` (unittest asserts), `retry`, and what `wait_for_unit` says
about a unit that failed.
"""

from vmrig import File, Node, Service, User
from vmrig.errors import RequestedAssertionFailed  # noqa: F401 (used by test_script)

nodes = {
    "machine": Node(
        packages=["python3"],
        users={"alice": User(groups=["adm"])},
        files={
            "/etc/app/config.ini": File(content="[app]\nport = 8080\n", mode=0o640, owner="alice", group="adm"),
            "/usr/local/bin/app-check": File(content="#!/bin/sh\ntest -r /etc/app/missing.conf\n", mode=0o755),
        },
        services={
            # Started at boot; fails because its configuration file is missing.
            "app-check": Service(exec_start="/usr/local/bin/app-check", type="oneshot"),
            "app": Service(
                exec_start="/usr/bin/python3 -m http.server 8080 --bind 127.0.0.1",
                user="alice",
                after=["network.target"],
            ),
            "cleanup": Service(exec_start="/usr/bin/find /tmp -mtime +1 -delete", type="oneshot", wanted_by=[]),
            "cleanup.timer": """
[Unit]
Description=Periodic cleanup

[Timer]
OnBootSec=1h

[Install]
WantedBy=timers.target
""",
        },
    ),
}

test_script = """
with subtest("users and files are in place"):
    t.assertEqual(machine.succeed("stat -c '%U:%G %a' /etc/app/config.ini").strip(), "alice:adm 640")
    machine.succeed("id -nG alice | grep -qw adm")

with subtest("the service runs as its user"):
    machine.wait_for_unit("app")
    machine.wait_for_open_port(8080)
    t.assertEqual(machine.succeed("ps -o user= -C python3").split(), ["alice"])

with subtest("the check unit fails, and says why"):
    try:
        machine.wait_for_unit("app-check")
    except RequestedAssertionFailed as error:
        assert 'reached state "failed"' in str(error), str(error)
    else:
        raise AssertionError("app-check should have failed")
    machine.require_unit_state("app-check", "failed")

with subtest("the timer is scheduled"):
    retry(lambda last_try: machine.systemctl("is-active cleanup.timer")[0] == 0, timeout=60)
"""

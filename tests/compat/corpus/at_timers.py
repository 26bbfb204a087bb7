"""`at` jobs and a systemd timer that fires every few seconds.

NixOS behaviours exercised: `wait_for_unit("atd")`, a job queued with
`at now` and `wait_for_file` on what it wrote, `atq`/`atrm`, a job run as an
ordinary user; a timer unit given as raw unit text next to its oneshot
service (`systemd.timers.tick` + `systemd.services.tick`),
`wait_for_unit("tick.timer")`, `wait_until_succeeds` on the service's
output, `systemctl list-timers`, `stop_job`/`start_job` on the timer.

Debian package standing in for `services.atd`: `at`. And NixOS's
`services.timesyncd` (on by default there): a node that names
`systemd-timesyncd` has it running, although vmrig's base image masks it.

Debian differences: at's job output is mailed through /usr/sbin/sendmail;
with --no-install-recommends no MTA is installed (at only recommends one), so
the jobs here redirect all their output. Debian's /etc/at.deny lets ordinary
users use at (NixOS: `services.atd.allowEveryone`).
A timer's default AccuracySec is one minute, so tick.timer sets 100 ms.
"""

from vmrig import Node, Service, User

TICK_TIMER = """\
[Unit]
Description=Tick every two seconds

[Timer]
OnActiveSec=1s
OnUnitActiveSec=2s
AccuracySec=100ms

[Install]
WantedBy=timers.target
"""

nodes = {
    "machine": Node(
        packages=["at", "systemd-timesyncd"],
        users={"alice": User()},
        services={
            "tick": Service(
                exec_start="/bin/sh -c 'date +%%s >> /var/lib/tick/ticks'",
                exec_start_pre=["/bin/mkdir -p /var/lib/tick"],
                type="oneshot",
                wanted_by=[],
            ),
            "tick.timer": TICK_TIMER,
        },
    ),
}

test_script = """
start_all()
machine.wait_for_unit("multi-user.target")
machine.wait_for_unit("atd")

with subtest("the package named in the node brings its unit: timesyncd runs"):
    machine.wait_for_unit("systemd-timesyncd.service")
    t.assertEqual(machine.succeed("timedatectl show -p NTP --value").strip(), "yes")

with subtest("a job queued for now runs"):
    machine.succeed("echo 'echo hi > /tmp/at-ran.new; mv /tmp/at-ran.new /tmp/at-ran' | at now")
    machine.wait_for_file("/tmp/at-ran", timeout=60)
    t.assertEqual(machine.succeed("cat /tmp/at-ran").strip(), "hi")

with subtest("a job runs as the user who queued it"):
    # Written aside and renamed: the file must not be seen before the job has written it.
    job = "id -un > /tmp/at-user.new 2>&1; mv /tmp/at-user.new /tmp/at-user"
    machine.succeed(f"su - alice -c \\"echo '{job}' | at now\\"")
    machine.wait_for_file("/tmp/at-user", timeout=60)
    t.assertEqual(machine.succeed("cat /tmp/at-user").strip(), "alice")
    t.assertEqual(machine.succeed("stat -c %U /tmp/at-user").strip(), "alice")

with subtest("a job for later waits in the queue and can be removed"):
    machine.succeed("echo 'touch /tmp/never' | at now + 2 hours")
    queue = machine.succeed("atq")
    assert len(queue.splitlines()) == 1, queue
    job = queue.split()[0]
    machine.succeed(f"atrm {job}")
    t.assertEqual(machine.succeed("atq").strip(), "")

with subtest("the timer fires every few seconds"):
    machine.wait_for_unit("tick.timer")
    machine.succeed("systemctl list-timers --all | grep -q tick.timer")
    machine.wait_until_succeeds("test $(wc -l < /var/lib/tick/ticks) -ge 3", timeout=60)
    t.assertEqual(machine.get_unit_property("tick.service", "Result"), "success")

with subtest("a stopped timer stops firing, a started one fires again"):
    machine.stop_job("tick.timer")
    machine.fail("systemctl is-active tick.timer")
    # A run the timer started just before it stopped may still be appending (under
    # emulation one took over a second): count once tick.service is idle.
    machine.wait_until_succeeds(
        "systemctl show -P ActiveState tick.service | grep -qx inactive"
        " && ! systemctl list-jobs --no-legend | grep -q tick.service",
        timeout=30,
    )
    before = machine.succeed("wc -l < /var/lib/tick/ticks").strip()
    machine.sleep(5)
    t.assertEqual(machine.succeed("wc -l < /var/lib/tick/ticks").strip(), before)
    machine.start_job("tick.timer")
    machine.wait_until_succeeds(f"test $(wc -l < /var/lib/tick/ticks) -gt {before}", timeout=30)
"""

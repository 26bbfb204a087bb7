"""systemd user units of a lingering user.

NixOS behaviours exercised: `machine.succeed("loginctl enable-linger alice")`
as the first command of the script (before any wait), then
`machine.wait_for_unit("hello.service", "alice")` (the `user=` argument:
`systemctl --user` as alice), `systemctl(..., user="alice")` and
`get_unit_property(..., user=)`, starting a second user unit on demand, the
user manager surviving without a login session, and a user's home and the
files in it belonging to the user (`users.users.alice.createHome`), and a
user in another user's group (`extraGroups = [ "bob" ]`, bob being a user
declared after her).

Debian packages standing in: none beyond the base image (systemd, dbus,
dbus-user-session and libpam-systemd; logind and D-Bus start on demand when
loginctl asks; the user manager's own D-Bus, /run/user/<uid>/bus, is what
`systemctl --user --wait` and `busctl --user` talk to, as on NixOS). The
user units are in alice's ~/.config/systemd/user, as home-manager would put
them (NixOS's `systemd.user.services` would put them in /etc/systemd/user).
A unit file cannot be enabled by a symlink given as a file, so
default.target pulls hello.service in through a drop-in
(~/.config/systemd/user/default.target.d/hello.conf), which systemd reads
like the `default.target.wants/` link NixOS makes.

Expected trouble (vmrig, not Debian): files under /home/alice are placed
before useradd runs; if the directories vmrig creates for them are owned by
root (and useradd then finds /home/alice already there and neither copies
/etc/skel nor changes its owner), the ownership subtest fails. The units
write to /tmp so that everything before that subtest runs either way.
"""

from vmrig import File, Node, User

HELLO = """\
[Unit]
Description=Hello from alice's user manager

[Service]
ExecStart=/bin/sh -c 'echo "hello from $(id -un)" > /tmp/hello-%u; exec sleep infinity'
"""

GREETER = """\
[Unit]
Description=A user unit started on demand

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo greeted > /tmp/greeter-%u'
"""

nodes = {
    "machine": Node(
        users={"alice": User(groups=["bob"]), "bob": User()},
        files={
            "/home/alice/.config/systemd/user/hello.service": File(content=HELLO, owner="alice", group="alice"),
            "/home/alice/.config/systemd/user/greeter.service": File(content=GREETER, owner="alice", group="alice"),
            "/home/alice/.config/systemd/user/greeter-once.service": File(
                content="[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo once > /tmp/greeter-once-%u'\n",
                owner="alice",
                group="alice",
            ),
            "/home/alice/.config/systemd/user/default.target.d/hello.conf": File(
                content="[Unit]\nWants=hello.service\n", owner="alice", group="alice"
            ),
        },
    ),
}

test_script = """
machine.succeed("loginctl enable-linger alice")
machine.wait_for_unit("multi-user.target")

with subtest("alice's user manager runs without a session"):
    machine.wait_for_unit("user@1000.service")
    machine.succeed("test -e /var/lib/systemd/linger/alice")
    # systemd 256 and newer list the user manager itself as a session of class "manager";
    # no login session ("user" class) exists for alice.
    machine.fail("loginctl list-sessions --no-legend | grep alice | grep -qv manager")

with subtest("the user unit starts as alice"):
    machine.wait_for_unit("hello.service", "alice")
    machine.wait_for_file("/tmp/hello-alice")
    t.assertEqual(machine.succeed("cat /tmp/hello-alice").strip(), "hello from alice")
    machine.succeed("pgrep -u alice -x sleep")
    t.assertEqual(machine.get_unit_property("hello.service", "ActiveState", user="alice"), "active")

with subtest("a unit started on demand through systemctl --user"):
    status, _ = machine.systemctl("is-active greeter.service", user="alice")
    assert status != 0, "greeter.service should not have started by itself"
    status, out = machine.systemctl("start greeter.service", user="alice")
    t.assertEqual(status, 0, out)
    machine.wait_for_unit("greeter.service", "alice")
    machine.succeed("grep -q greeted /tmp/greeter-alice")

with subtest("alice's user manager has a D-Bus of its own"):
    machine.succeed("test -S /run/user/1000/bus")
    # --wait follows the job through the bus's signals: no user bus, no --wait.
    status, out = machine.systemctl("start --wait greeter-once.service", user="alice")
    t.assertEqual(status, 0, out)
    machine.succeed("grep -q once /tmp/greeter-once-alice")
    machine.succeed("su -l alice -c 'busctl --user list' | grep -q org.freedesktop.systemd1")

with subtest("the user manager stops when lingering ends"):
    machine.succeed("loginctl disable-linger alice")
    machine.wait_until_fails("systemctl is-active user@1000.service", timeout=30)

with subtest("alice owns her home and the files in it"):
    for path in ["/home/alice", "/home/alice/.config", "/home/alice/.config/systemd/user/hello.service"]:
        t.assertEqual(machine.succeed(f"stat -c %U {path}").strip(), "alice", path)

with subtest("alice is in bob's group, and bob is a user of his own"):
    machine.succeed("id bob")
    assert "bob" in machine.succeed("id -nG alice").split()
    t.assertEqual(machine.succeed("id -ng bob").strip(), "bob")
"""

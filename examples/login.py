"""Logging in on the virtual terminals, in the spirit of NixOS's login test.

A user logs in on tty1 with her password, root on tty2 (switched to with Alt-F2), the screen is
saved, and Ctrl-Alt-Delete reboots the machine. The node has a display
(graphics=True): the VGA text screen that a screenshot and OCR read.

    vmrig run examples/login.py
"""

from vmrig import Node, User

nodes = {
    "machine": Node(
        graphics=True,
        users={"alice": User(password="foobar")},
    ),
}

test_script = """
machine.start(allow_reboot=True)
machine.wait_for_unit("multi-user.target")

with subtest("a login prompt on tty1"):
    machine.wait_for_unit("getty@tty1.service")
    machine.wait_until_succeeds("pgrep -f 'agetty.*tty1'")
    machine.wait_until_tty_matches("1", "login: ")

with subtest("alice logs in on tty1"):
    machine.send_chars("alice\\n")
    machine.wait_until_tty_matches("1", "Password: ")
    machine.send_chars("foobar\\n")
    machine.wait_until_succeeds("pgrep -u alice -t tty1 bash")
    machine.send_chars("touch done-on-tty1\\n")
    machine.wait_for_file("/home/alice/done-on-tty1")

with subtest("Alt-F2 switches to tty2 and its own login prompt"):
    machine.send_key("alt-f2")
    machine.wait_until_succeeds("grep -qx tty2 /sys/class/tty/tty0/active")
    machine.wait_for_unit("getty@tty2.service")
    machine.wait_until_succeeds("pgrep -f 'agetty.*tty2'")
    machine.wait_until_tty_matches("2", "login: ")

with subtest("root logs in on tty2"):
    machine.send_chars("root\\n")
    machine.wait_until_tty_matches("2", "root@machine:~# ")
    machine.send_chars("echo hello from $(tty)\\n")
    machine.wait_until_tty_matches("2", "hello from /dev/tty2")
    machine.screenshot("tty2")

with subtest("the screen shows tty2"):
    machine.wait_for_text("hello from")

with subtest("Ctrl-Alt-Delete reboots"):
    first = machine.succeed("cat /proc/sys/kernel/random/boot_id")
    machine.reboot()
    machine.wait_for_unit("multi-user.target")
    assert machine.succeed("cat /proc/sys/kernel/random/boot_id") != first
    machine.wait_until_tty_matches("1", "login: ")
"""

"""An X session in the spirit of NixOS's X11 tests: wait for X, open an xterm, find it by its title, read it.

`Node(x11=X11())` is the preset: Debian's generic kernel, Xorg on :0, IceWM,
xterm and the X utilities, and alice logged in to her session.

    vmrig run examples/x11.py
"""

from vmrig import X11, Node

nodes = {
    "machine": Node(x11=X11(user="alice")),
}

test_script = """
start_all()
machine.wait_for_unit("display-manager.service")
machine.wait_for_x()
machine.wait_for_file("/home/alice/.Xauthority")
machine.succeed("xauth merge ~alice/.Xauthority")

with subtest("alice's session has its window manager, its taskbar up by the time wait_for_x returns"):
    machine.succeed("pgrep -u alice -x icewm")
    assert "TaskBar" in machine.get_window_names()

with subtest("an xterm is found by its title and its text is read from the screen"):
    machine.execute("su - alice -c 'DISPLAY=:0 xterm -title greeting-term -geometry 60x10+40+40 -fa Monospace -fs 16 -e sh -c \\"echo Hello from vmrig; exec sleep infinity\\"' >/dev/null 2>&1 &")
    machine.wait_for_window("greeting-term")
    assert "greeting-term" in machine.get_window_names()
    machine.wait_for_text("Hello from vmrig")
    machine.screenshot("xterm")

with subtest("keys typed reach the focused window"):
    machine.succeed("xdotool search --name greeting-term windowactivate --sync")
    machine.succeed("test \\"$(xdotool getactivewindow getwindowname)\\" = greeting-term")
"""

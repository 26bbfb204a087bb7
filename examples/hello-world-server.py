"""A node serves "Hello world" on port 8000 from a systemd service; curl checks it."""

from vmrig import Node, Service

nodes = {
    "node1": Node(
        packages=["python3", "curl"],
        files={"/srv/www/index.html": "Hello world\n"},
        services={
            "hello-world-server": Service(
                exec_start="/usr/bin/python3 -m http.server 8000 --directory /srv/www",
            ),
        },
    ),
}

test_script = """
start_all()
node1.wait_for_unit("hello-world-server")
node1.wait_for_open_port(8000)
output = node1.succeed("curl --silent localhost:8000/index.html")
assert "Hello world" in output, f"'{output}' does not contain 'Hello world'"
"""

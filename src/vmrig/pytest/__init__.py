"""vmrig in pytest: machines as fixtures (`machines(...)`), test files as items; the plugin is vmrig.pytest.plugin.

from vmrig import Node
from vmrig.pytest import machines

vms = machines(server=Node(packages=["nginx"]), client=Node(packages=["curl"]))

def test_front_page(vms):
    vms.server.wait_for_unit("nginx.service")
    vms.client.succeed("curl -sf http://server/")
"""

from __future__ import annotations

from vmrig.pytest.topology import Machines, machines

__all__ = ["Machines", "machines"]

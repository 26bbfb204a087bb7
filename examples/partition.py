"""Three nodes; one is cut off from the other two by a network partition, then the network heals.

`network` is vmrig's fault injection: partitions, and delay, jitter, loss or
a rate limit on a machine's link or between two machines. The faults are
real (tc rules in the guests' kernels): what the guests measure shows them.
"""

from vmrig import Node, Service

web = Node(
    packages=["python3", "curl"],
    services={"web": Service(exec_start="/usr/bin/python3 -m http.server 8000 --directory /etc")},
)
nodes = {"node1": web, "node2": web, "node3": web}

test_script = """
start_all()
for machine in machines:
    machine.wait_for_unit("web")
    machine.wait_for_open_port(8000)

def talks(a, b):
    return a.execute(f"curl --fail --silent --max-time 3 -o /dev/null http://{b.name}:8000/hostname")[0] == 0

with subtest("everyone talks to everyone"):
    for a in machines:
        for b in machines:
            assert a is b or talks(a, b), f"{a.name} cannot reach {b.name}"

with subtest("node1 is cut off, the two others still talk"):
    network.partition([node1], [node2, node3])
    assert not talks(node1, node2) and not talks(node2, node1)
    assert not talks(node1, node3) and not talks(node3, node1)
    assert talks(node2, node3) and talks(node3, node2)
    log.info(f"faults: {network.faults()}")

with subtest("the network heals"):
    network.heal()
    node1.wait_until_succeeds("curl --fail --silent --max-time 3 http://node2:8000/hostname", timeout=60)
    assert talks(node3, node1)

with subtest("a slow link between node1 and node2 only"):
    with network.link(node1, node2).set(delay="200ms"):
        # a TCP handshake and a request: at least two round trips of 400 ms
        took = float(node1.succeed("curl --silent -o /dev/null -w '%{time_total}' http://node2:8000/hostname"))
        assert took >= 0.8, f"the request took {took:.3f} s"
        fast = float(node3.succeed("curl --silent -o /dev/null -w '%{time_total}' http://node2:8000/hostname"))
        assert fast < 0.8, f"node3's request took {fast:.3f} s"
"""

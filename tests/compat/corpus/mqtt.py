"""MQTT: a mosquitto broker, a subscriber and a publisher on another node.

NixOS behaviours exercised: `wait_for_unit("mosquitto")`,
`wait_for_open_port(1883)`, a subscriber started in the background from
`succeed("... &")` whose output goes to a file, `publish` from another node,
`wait_until_succeeds` on what the subscriber received, a retained message.

Debian packages standing in for `services.mosquitto`: `mosquitto` on the
broker, `mosquitto-clients` (mosquitto_pub, mosquitto_sub) on the client.

Debian differences: Debian's mosquitto 2 listens only on localhost unless a
listener is configured; /etc/mosquitto/conf.d/test.conf (included by
Debian's mosquitto.conf) adds `listener 1883` on every address with
anonymous access, what a NixOS `services.mosquitto.listeners` entry with
`omitPasswordAuth` and an `acl` of `topic readwrite #` gives. Debian's
mosquitto.conf logs to a file whose lines depend on the version, so the
script checks the broker's connections with `ss` instead of its log.
"""

from vmrig import Node

nodes = {
    "broker": Node(
        packages=["mosquitto"],
        files={"/etc/mosquitto/conf.d/test.conf": "listener 1883\nallow_anonymous true\n"},
    ),
    "client": Node(packages=["mosquitto-clients"]),
}

test_script = """
start_all()
broker.wait_for_unit("network.target")
broker.wait_for_unit("mosquitto")
broker.wait_for_open_port(1883)

with subtest("the client reaches the broker"):
    client.wait_until_succeeds("mosquitto_pub -h broker -t test/ping -m ping", timeout=30)

with subtest("a subscriber on the client gets what is published"):
    client.succeed("mosquitto_sub -h broker -t test/topic -C 1 -W 60 > /tmp/received 2>&1 &")
    # publish until the subscriber, which may not have subscribed yet, got it
    client.wait_until_succeeds(
        "mosquitto_pub -h broker -t test/topic -m 'hello world' && grep -q 'hello world' /tmp/received",
        timeout=30,
    )
    t.assertEqual(client.succeed("cat /tmp/received").strip(), "hello world")

with subtest("the broker sees the client's connection"):
    client.succeed("(mosquitto_sub -h broker -t test/idle -W 60 >/dev/null 2>&1 &)")
    broker.wait_until_succeeds(
        # over IPv4 or IPv6: /etc/hosts names the broker by both
        "ss -tnH state established '( sport = :1883 )' | grep -qE '192[.]168[.]1[.]|2001:db8:1::'", timeout=30
    )

with subtest("a retained message reaches a later subscriber"):
    client.succeed("mosquitto_pub -h broker -t test/retained -r -m kept")
    out = client.succeed("mosquitto_sub -h broker -t test/retained -C 1 -W 10")
    t.assertEqual(out.strip(), "kept")
"""

"""Web server behind a reverse proxy, on three nodes.

NixOS behaviours exercised: `start_all()`, `wait_for_unit("network-online.target")`,
`wait_for_unit` of a packaged service, `wait_for_open_port(80)`, `curl` from
another node by host name, a proxy that answers 503 once its backend is gone
(`systemctl stop` from the script, `wait_until_succeeds`), subtests.

Debian packages standing in for the NixOS services: `nginx` for
`services.nginx` (the backend; Debian's default site serves /var/www/html and
prefers index.html over its own index.nginx-debian.html), `haproxy` for
`services.haproxy` (its whole configuration in /etc/haproxy/haproxy.cfg, as
`services.haproxy.config` would write it), `curl` on the client.

Debian differences: none expected. network-online.target is reached at once
(vmrig sets the addresses in the initramfs and masks systemd-networkd-wait-online),
as it is in a NixOS test VM without a wait-online service.
"""

from vmrig import Node

HAPROXY_CFG = """\
global
    log /dev/log local0
    maxconn 256

defaults
    mode http
    log global
    option httplog
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend web
    bind :::80 v4v6
    http-response set-header X-Served-Via haproxy
    default_backend webserver

backend webserver
    server web1 webserver:80 check inter 1s fall 2 rise 1
"""

nodes = {
    "webserver": Node(
        packages=["nginx"],
        files={"/var/www/html/index.html": "<h1>served by nginx on webserver</h1>\n"},
    ),
    "proxy": Node(
        packages=["haproxy"],
        files={"/etc/haproxy/haproxy.cfg": HAPROXY_CFG},
    ),
    "client": Node(packages=["curl"]),
}

test_script = """
start_all()

webserver.wait_for_unit("network-online.target")
webserver.wait_for_unit("nginx")
webserver.wait_for_open_port(80)
proxy.wait_for_unit("network-online.target")
proxy.wait_for_unit("haproxy")
proxy.wait_for_open_port(80)

with subtest("the backend serves its page directly"):
    page = client.succeed("curl --fail --silent http://webserver/")
    assert "served by nginx on webserver" in page, page

with subtest("the page comes through the proxy"):
    client.wait_until_succeeds("curl --fail --silent http://proxy/ | grep -q 'served by nginx'", timeout=30)
    headers = client.succeed("curl --fail --silent --dump-header - --output /dev/null http://proxy/")
    assert "x-served-via: haproxy" in headers.lower(), headers

with subtest("nginx logs the proxied requests, over IPv4 and IPv6"):
    webserver.wait_until_succeeds("grep -q 'GET / HTTP' /var/log/nginx/access.log", timeout=30)
    client.succeed("curl --fail --silent -6 http://proxy/ >/dev/null")

with subtest("the proxy answers 503 when the backend is down"):
    webserver.systemctl("stop nginx")
    webserver.wait_for_closed_port(80, timeout=30)
    client.wait_until_succeeds(
        "test \\"$(curl --silent --output /dev/null --write-out '%{http_code}' http://proxy/)\\" = 503",
        timeout=30,
    )

with subtest("and recovers when it is back"):
    webserver.systemctl("start nginx")
    webserver.wait_for_open_port(80)
    client.wait_until_succeeds("curl --fail --silent http://proxy/ | grep -q 'served by nginx'", timeout=30)
"""

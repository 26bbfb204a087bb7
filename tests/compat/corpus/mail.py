"""Mail: a client submits to server1, which relays to server2, which delivers locally.

NixOS behaviours exercised: `wait_for_unit("postfix")` and
`wait_for_open_port(25)` on two servers, a relay restricted to its own
networks (`mynetworks`), a relay host (`relayHost`), local delivery into
/var/mail, `wait_until_succeeds` on the delivered mailbox and on an empty
queue, a refused relay from a stranger.

Debian packages standing in for `services.postfix`: `postfix` on both
servers (main.cf given whole as a file, as `services.postfix.config` renders
it), `swaks` on the client to speak SMTP (NixOS tests often use Python's
smtplib instead).

Debian differences:
- Debian 13's `postfix.service` runs the daemon itself (Debian 12's was an
  umbrella oneshot over `postfix@-.service`), so the script waits for
  `postfix` and port 25, as a NixOS script does.
- Debian's master.cf runs smtp and friends chrooted in /var/spool/postfix;
  the instance's start copies /etc/hosts there, which is how server1 finds
  server2 without DNS (`smtp_host_lookup = native`, no MX lookups).
- The package's debconf questions are answered by the noninteractive
  defaults at image build time; main.cf from `files=` replaces whatever they
  produced. `alias_maps` is empty, so no aliases.db is needed.
"""

from vmrig import Node, User

MAIN_CF = """\
compatibility_level = 3.6
myhostname = {name}.example.test
mydomain = example.test
myorigin = $myhostname
mydestination = $myhostname, {name}, localhost
mynetworks = 127.0.0.0/8 [::1]/128 {mynetworks}
inet_interfaces = all
inet_protocols = all
relayhost = {relayhost}
smtp_host_lookup = native
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = $myhostname ESMTP
biff = no
"""

nodes = {
    "client": Node(packages=["swaks"]),
    # server1 relays for the client's network and sends everything not local to server2
    "server1": Node(
        packages=["postfix"],
        files={
            "/etc/postfix/main.cf": MAIN_CF.format(
                name="server1", mynetworks="192.168.1.0/24 [2001:db8:1::]/64", relayhost="[server2]:25"
            )
        },
    ),
    # server2 only accepts mail for itself (and relays for no one but localhost)
    "server2": Node(
        packages=["postfix"],
        users={"bob": User()},
        files={"/etc/postfix/main.cf": MAIN_CF.format(name="server2", mynetworks="", relayhost="")},
    ),
}

test_script = """
start_all()
for server in [server1, server2]:
    server.wait_for_unit("network-online.target")
    server.wait_for_unit("postfix")
    server.wait_for_open_port(25)

with subtest("the configuration is valid"):
    server1.succeed("postfix check")
    t.assertEqual(server1.succeed("postconf -h relayhost").strip(), "[server2]:25")

with subtest("the client submits a mail for bob@server2 to server1"):
    client.wait_until_succeeds("swaks --quit-after EHLO --server server1", timeout=60)
    client.succeed(
        "swaks --server server1 --from alice@client --to bob@server2 "
        "--header 'Subject: compat test' --body 'hello bob, via server1'"
    )

with subtest("server2 delivers it into bob's mailbox"):
    server2.wait_until_succeeds("grep -q 'Subject: compat test' /var/mail/bob", timeout=60)
    server2.succeed("grep -q 'hello bob, via server1' /var/mail/bob")
    # it went through server1
    server2.succeed("grep -q 'from server1' /var/mail/bob")
    t.assertEqual(server2.succeed("stat -c %U /var/mail/bob").strip(), "bob")

with subtest("server1's queue empties"):
    server1.wait_until_succeeds("postqueue -p | grep -q 'Mail queue is empty'", timeout=60)

with subtest("server2 refuses to relay for the client"):
    out = client.fail("swaks --server server2 --from alice@client --to someone@elsewhere.test")
    assert "Relay access denied" in out, out
"""

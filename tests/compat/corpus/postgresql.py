"""PostgreSQL on one node: a table created and read back with psql.

NixOS behaviours exercised: `machine.wait_for_unit("postgresql")` followed by
`wait_for_open_port(5432)`, `sudo -u postgres psql -c ...`, a role and a
database created from the script, a password login over TCP on 127.0.0.1,
`t.assertIn` / `t.assertEqual` / `assert` on query output, `fail()` for a
query that must be refused.

Debian package standing in for `services.postgresql`: `postgresql` (trixie:
PostgreSQL 17, cluster 17/main created by the package's postinst at image
build time), plus `sudo` (not in a minimal Debian image; NixOS has it).

Debian differences:
- `postgresql.service` is an umbrella oneshot (`ExecStart=/bin/true`,
  RemainAfterExit) that can be active before the server runs; the server is
  `postgresql@17-main.service`, which Debian's `postgresql-generator` (a
  systemd generator in postgresql-common) links into postgresql.service.wants
  at boot. The script therefore also waits for `postgresql@17-main` and the
  port. If vmrig ever masked package generators, the cluster would not start.
- Debian's cluster listens on localhost only and pg_hba.conf asks for
  scram-sha-256 on 127.0.0.1 and peer authentication on the socket, as
  NixOS's defaults do for local connections.
"""

from vmrig import Node

nodes = {
    "machine": Node(packages=["postgresql", "sudo"]),
}

test_script = """
start_all()
machine.wait_for_unit("postgresql")
machine.wait_for_unit("postgresql@17-main")
machine.wait_for_open_port(5432)

def psql(sql, db="postgres"):
    return machine.succeed(f"sudo -u postgres psql -d {db} -tAc \\"{sql}\\"")

with subtest("the server answers and is version 17"):
    version = psql("SHOW server_version;")
    assert version.startswith("17"), version

with subtest("a table is created, filled and read back"):
    psql("CREATE TABLE sth (id int, name text);")
    psql("INSERT INTO sth VALUES (1, 'one'), (2, 'two'), (3, 'three');")
    t.assertEqual(psql("SELECT count(*) FROM sth;").strip(), "3")
    t.assertIn("two", psql("SELECT name FROM sth WHERE id = 2;"))

with subtest("a role logs in with a password over TCP"):
    psql("CREATE ROLE app LOGIN PASSWORD 'secret';")
    psql("CREATE DATABASE appdb OWNER app;")
    machine.succeed(
        "PGPASSWORD=secret psql -h 127.0.0.1 -U app -d appdb -c 'CREATE TABLE notes (body text);'",
        "PGPASSWORD=secret psql -h 127.0.0.1 -U app -d appdb -c \\"INSERT INTO notes VALUES ('hello');\\"",
    )
    out = machine.succeed("PGPASSWORD=secret psql -h 127.0.0.1 -U app -d appdb -tAc 'SELECT body FROM notes;'")
    t.assertEqual(out.strip(), "hello")
    machine.fail("PGPASSWORD=wrong psql -h 127.0.0.1 -U app -d appdb -c 'SELECT 1;'")

with subtest("the data survives a restart of the service"):
    machine.succeed("systemctl restart postgresql")
    machine.wait_for_unit("postgresql@17-main")
    machine.wait_for_open_port(5432)
    t.assertEqual(psql("SELECT name FROM sth ORDER BY id DESC LIMIT 1;").strip(), "three")
"""

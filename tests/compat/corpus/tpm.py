"""A TPM 2.0 in the guest: random numbers, an NV index kept across a reboot, TPM-bound credentials.

NixOS behaviours exercised: `virtualisation.tpm.enable` (here
`Node(tpm=True)`): /dev/tpm0 and the kernel's resource manager /dev/tpmrm0;
`tpm2-tools` talking to the TPM; a value written to an NV index is still
there after `shutdown()` and `start()`, since the emulated TPM's state lasts
the run (NixOS keeps its swtpm directory); `systemd-creds encrypt
--with-key=tpm2` and `decrypt`, as the systemd credential tests do.

Debian packages standing in: none beyond what `tpm=True` brings, which is
`tpm2-tools` and the TSS libraries that systemd-creds loads for its TPM2
support (NixOS's systemd has them).
"""

from vmrig import Node

nodes = {"machine": Node(tpm=True)}

test_script = """
machine.wait_for_unit("multi-user.target")

with subtest("the TPM and its resource manager are there"):
    machine.succeed("test -c /dev/tpm0", "test -c /dev/tpmrm0")
    t.assertEqual(machine.succeed("cat /sys/class/tpm/tpm0/tpm_version_major").strip(), "2")
    t.assertEqual(len(machine.succeed("tpm2_getrandom --hex 16").strip()), 32)

with subtest("an NV index outlives a reboot"):
    machine.succeed(
        "tpm2_nvdefine -C o -s 14 -a 'ownerread|ownerwrite' 0x1500016",
        "printf hello-from-tpm | tpm2_nvwrite -C o -i - 0x1500016",
    )
    machine.shutdown()
    machine.start()
    machine.wait_for_unit("multi-user.target")
    t.assertEqual(machine.succeed("tpm2_nvread -C o -s 14 0x1500016"), "hello-from-tpm")

with subtest("credentials sealed to the TPM"):
    machine.succeed("echo -n sealed-secret | systemd-creds encrypt --with-key=tpm2 --name=token - /root/token.cred")
    t.assertEqual(machine.succeed("systemd-creds decrypt --name=token /root/token.cred -"), "sealed-secret")
"""

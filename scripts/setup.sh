#!/bin/sh
# Installs what vmrig needs on a Debian 12 (or newer) machine: the host
# programs (apt), a virtualenv in .venv with vmrig and its test tools.
set -eu
cd "$(dirname "$0")/.."
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
APT_PACKAGES="qemu-system-x86 qemu-utils mmdebstrap e2fsprogs vde2 socat openssh-client
  util-linux iproute2 zstd lz4 python3-venv"
missing=
for package in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,repl,debug]'
echo "setup: done; vmrig is .venv/bin/vmrig"

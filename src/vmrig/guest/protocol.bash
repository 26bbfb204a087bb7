# Sourced by the backdoor shell (through BASH_ENV): the driver's commands.
# Each command runs in a forked subshell, so nothing persists between
# commands, and nothing is executed per command but the command itself.
unset BASH_ENV
set -m  # each command its own process group, so a timeout kills it whole
exec 8<>/run/vmrig/out 9<>/run/vmrig/watchdog
# Bytes for a command's stdin arrive on their own virtio port, not on the
# console: this shell reads its script with read-ahead and would take them
# for commands.
__vmrig_data=
for __vmrig_port in /sys/class/virtio-ports/*; do
    read -r __vmrig_name 2>/dev/null <"$__vmrig_port/name" || continue
    [[ $__vmrig_name == vmrig.data ]] && __vmrig_data=/dev/${__vmrig_port##*/}
done
unset __vmrig_port __vmrig_name

# __vmrig_run NONCE TIMEOUT CMD [INPUT_BYTES]
# Prints "NONCE B", the command's stdout, then "\nNONCE E STATUS", all through
# the output pipe. With INPUT_BYTES, the command's stdin is that many bytes
# read from the data port; otherwise /dev/null.
__vmrig_run() {
    local nonce=$1 timeout=$2 cmd=$3 input=${4:-} pid watchdog=0 status fired
    if [[ -n $input ]]; then
        head -c "$input" "$__vmrig_data" >/run/vmrig/input
        input=/run/vmrig/input
    fi
    printf '%s B\n' "$nonce" >&8
    if [[ -n $input ]]; then
        (set -euo pipefail; eval "$cmd") <"$input" >&8 &
    else
        (set -euo pipefail; eval "$cmd") </dev/null >&8 &
    fi
    pid=$!
    if ((timeout > 0)); then
        (
            read -r -t "$timeout" -u 9 || true
            printf '%s\n' "$nonce" >/run/vmrig/timeout
            kill -TERM -- "-$pid" 2>/dev/null
            read -r -t 5 -u 9 || true
            kill -KILL -- "-$pid" 2>/dev/null
        ) &
        watchdog=$!
    fi
    wait "$pid"
    status=$?
    if ((watchdog)); then
        kill -PIPE -- "-$watchdog" 2>/dev/null  # bash reports no SIGPIPE deaths
        fired=
        [[ -e /run/vmrig/timeout ]] && read -r fired </run/vmrig/timeout
        [[ $fired == "$nonce" ]] && status=124
    fi
    [[ -n $input ]] && : >/run/vmrig/input
    printf '\n%s E %d\n' "$nonce" "$status" >&8
}

# Sourced by the backdoor shell (through BASH_ENV): the driver's commands.
# Each command runs in a forked subshell, so nothing persists between
# commands, and nothing is executed per command but the command itself.
unset BASH_ENV
set -m  # each command its own process group, so a timeout kills it whole
# Commands are evaluated by __vmrig_eval, from a file sourced by the name
# "bash": bash starts its error messages with the name of the file a function
# comes from, so a missing command reads "bash: fgconsole: command not found"
# as under NixOS's `bash -c`, not "/usr/lib/vmrig/protocol.bash: line 22: ...".
__vmrig_cwd=$PWD
cd /usr/lib/vmrig && shopt -u sourcepath && source bash
shopt -s sourcepath
cd "$__vmrig_cwd" || cd /
unset __vmrig_cwd
exec 8<>/run/vmrig/out 9<>/run/vmrig/watchdog
# __vmrig_run NONCE TIMEOUT CMD [INPUT_BYTES]
# Prints "NONCE B", the command's stdout, then "\nNONCE E STATUS", all through
# the output pipe (the frame vmrig/contract.py describes and vmrig/channel.py
# decodes). With INPUT_BYTES, the command's stdin is that many bytes
# read from the data port; otherwise /dev/null.
__vmrig_run() {
    local nonce=$1 timeout=$2 cmd=$3 input=${4:-} pid watchdog status fired reason
    if [[ -n $input ]]; then
        head -c "$input" <&7 >/run/vmrig/input  # fd 7: the data port (see backdoor)
        input=/run/vmrig/input
    fi
    printf '%s B\n' "$nonce" >&8
    if [[ -n $input ]]; then
        (set -euo pipefail; __vmrig_eval "$cmd") <"$input" >&8 &
    else
        (set -euo pipefail; __vmrig_eval "$cmd") </dev/null >&8 &
    fi
    pid=$!
    # The watchdog ends the command when its time is up (status 124) or when
    # the driver cancels it (Ctrl-C at its prompt: the nonce arrives on the
    # control port, which the backdoor copies into the watchdog's FIFO; 130).
    (
        reason=124 end=$((SECONDS + timeout)) left=
        while :; do
            if ((timeout > 0)); then
                left=$((end - SECONDS))
                ((left > 0)) || break
                read -r -t "$left" -u 9 line || break
            else
                read -r -u 9 line || break
            fi
            [[ $line == "$nonce" ]] && reason=130 && break
        done
        printf '%s %s\n' "$nonce" "$reason" >/run/vmrig/timeout
        kill -TERM -- "-$pid" 2>/dev/null
        read -r -t 5 <>/run/vmrig/pause || true  # a 5 s pause that execs nothing
        kill -KILL -- "-$pid" 2>/dev/null
    ) &
    watchdog=$!
    disown "$watchdog"  # so that its death is not reported on the console
    wait "$pid"
    status=$?
    # KILL: systemd starts services with SIGPIPE ignored, and bash cannot undo
    # that; a watchdog left alive would read (and eat) the next cancellation.
    kill -KILL -- "-$watchdog" 2>/dev/null
    fired=
    [[ -e /run/vmrig/timeout ]] && read -r fired reason </run/vmrig/timeout
    [[ $fired == "$nonce" ]] && status=$reason
    [[ -n $input ]] && : >/run/vmrig/input
    printf '\n%s E %d\n' "$nonce" "$status" >&8
}

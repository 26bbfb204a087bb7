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
    # The command: without the backdoor's own descriptors, with $0 "bash" and, as under
    # `bash -c`, no arguments and none of this function's variables (set -u fails on them).
    # An exec of bash would make $$ the command's own, at 10 ms a command (20.8 against
    # 10.4 ms round trips): $$ stays the backdoor shell's.
    if [[ -n $input ]]; then
        (exec 7>&- 8>&- 9>&-; BASH_ARGV0=bash; __vmrig_cmd=$cmd
         unset -v nonce timeout cmd input pid watchdog status fired reason
         set -euo pipefail; __vmrig_eval) <"$input" >&8 &
    else
        (exec 7>&- 8>&- 9>&-; BASH_ARGV0=bash; __vmrig_cmd=$cmd
         unset -v nonce timeout cmd input pid watchdog status fired reason
         set -euo pipefail; __vmrig_eval) </dev/null >&8 &
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
    __vmrig_wait_writers "$pid"
    # KILL: systemd starts services with SIGPIPE ignored, and bash cannot undo
    # that; a watchdog left alive would read (and eat) the next cancellation.
    kill -KILL -- "-$watchdog" 2>/dev/null
    fired=
    [[ -e /run/vmrig/timeout ]] && read -r fired reason </run/vmrig/timeout
    [[ $fired == "$nonce" ]] && status=$reason
    [[ -n $input ]] && : >/run/vmrig/input
    printf '\n%s E %d\n' "$nonce" "$status" >&8
}
# __vmrig_wait_writers PGID: waits while a process left in the command's process
# group holds the output pipe. Under NixOS's `bash -c CMD | base64` the output
# ends only when nothing holds it, so `(sleep 1; echo late) &` gives "late";
# processes started with `>&2 &`, `>/dev/null &` or systemd-run are not waited
# for, nor is output from processes that leave the group (setsid, su -c, timeout).
# Builtins only; the /proc scan runs only when the group outlives the command.
__vmrig_wait_writers() {
    local pgid=$1 since=$SECONDS noted= writer
    while kill -0 -- "-$pgid" 2>/dev/null; do
        # Twice: a writer's child made while the first scan ran is in the second one's list.
        __vmrig_writer "$pgid" || __vmrig_writer "$pgid" || return 0
        if [[ -z $noted ]] && ((SECONDS - since >= 10)); then
            printf 'vmrig: the command has ended, but its background process %s still holds its output;' "$writer" >&2
            printf ' as under NixOS, the command lasts until that closes it (start it with ">&2 &" or systemd-run)\n' >&2
            noted=1
        fi
        read -r -t 0.2 <>/run/vmrig/pause || :
    done
}
# __vmrig_writer PGID: sets the caller's `writer` to "PID (NAME)" of a process in
# group PGID that holds the output pipe (any fd); fails if none does.
__vmrig_writer() {
    local pgid=$1 dir stat fields fd
    for dir in /proc/[0-9]*; do
        read -r stat 2>/dev/null <"$dir/stat" || continue
        fields=(${stat##*) })
        [[ ${fields[2]} == "$pgid" ]] || continue
        for fd in "$dir"/fd/*; do
            if [[ $fd -ef /run/vmrig/out ]]; then
                stat=${stat#* (}
                writer="${dir#/proc/} (${stat%%) *})"
                return 0
            fi
        done
    done
    return 1
}
# __vmrig_fixup_running: whether the resident fix-up (guest/fixup.c, --serve) runs;
# sets the caller's `pid` to its pid. A pid file outlives its process, so the
# process must still hold the request FIFO, as the file says (pid, fd).
# Builtins only: no fork.
__vmrig_fixup_running() {
    local fd=
    pid=
    if [[ -r /run/vmrig/fixup.pid ]]; then
        read -r pid fd </run/vmrig/fixup.pid || :
    fi
    [[ -n $pid && -n $fd && /proc/$pid/fd/$fd -ef /run/vmrig/fixup.in ]]
}
# __vmrig_fixup SEED_HEX +|= SECONDS NANOSECONDS: a restored guest's fix-up
# (guest/fixup.c), handed to the resident one if it runs: a restored guest's first
# exec costs most of a second under TCG, and a running process only resumes.
__vmrig_fixup() {
    local pid id answer
    if ! __vmrig_fixup_running; then
        /usr/lib/vmrig/fixup "$@"
        return
    fi
    # Opened read-write, a FIFO never blocks the opener; the answer carries the
    # request's id, so a late answer to an earlier request is skipped. No
    # `read -t`: bash times it by the wall clock, which the fix-up moves on
    # (hours, for an old snapshot); the command's watchdog bounds the wait.
    printf '%s\n' "$*" 1<>/run/vmrig/fixup.in
    while read -r id answer 0<>/run/vmrig/fixup.out; do
        [[ $id == "${1:0:16}" ]] || continue
        [[ $answer == ok ]] && return 0
        printf 'fix-up: %s\n' "${answer#error }" >&2
        return 1
    done
    printf 'fix-up: cannot read the answer of the resident fix-up (pid %s)\n' "$pid" >&2
    return 1
}
# __vmrig_fixup_serve: starts the resident fix-up unless it runs (before a
# snapshot is saved, so that its restores find it running).
__vmrig_fixup_serve() {
    local word pid fd fifo
    __vmrig_fixup_running && return 0
    for fifo in /run/vmrig/fixup.in /run/vmrig/fixup.out; do
        [[ -p $fifo ]] || mkfifo -m 0600 "$fifo"
    done
    # Its own session (the command's process group ends with the command), in /,
    # without the backdoor's ports and pipes (fds 7, 8, 9).
    (
        cd / && exec setsid /usr/lib/vmrig/fixup --serve /run/vmrig/fixup.in /run/vmrig/fixup.out \
            </dev/null >/dev/null 2>/run/vmrig/fixup.log 7>&- 8>&- 9>&-
    ) &
    if read -r -t 30 word pid fd 0<>/run/vmrig/fixup.out && [[ $word == ready ]]; then
        printf '%s %s\n' "$pid" "$fd" >/run/vmrig/fixup.pid
        return 0
    fi
    printf 'fix-up: the resident fix-up did not start\n' >&2
    return 1
}

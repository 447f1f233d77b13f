#!/bin/sh
# pvestrap first boot, as pvestrap-firstboot.service runs it at every boot until it succeeds.
#
#   done marker present  -> nothing to do (exit 0)
#   answer file present  -> the unattended flow: `pvestrap firstboot --answers FILE`
#                           (progress on stdout = the journal; it resumes after an interruption).
#                           It needs the cluster's first-boot secret beside the answer file
#                           (answers.firstboot-secret, mode 0600, the same on every node; made
#                           with the answer file: `pvestrap answer secret FILE`) and exits 2
#                           naming it when it is missing.
#   no answer file       -> `pvestrap wizard` on the console (tty1), the getty there stopped
#                           for that time; the done marker is written when the wizard succeeds
#
# Settings (environment, e.g. from /etc/default/pvestrap-firstboot):
#   PVESTRAP_ANSWERS        answer file             (default /etc/pvestrap/answers.toml)
#   PVESTRAP_STATE_DIR      progress, done marker   (default /var/lib/pvestrap)
#   PVESTRAP_FIRSTBOOT      command of the flow     (default "pvestrap firstboot")
#   PVESTRAP_FIRSTBOOT_ARGS more options for it     (e.g. "--peer-wait 1200")
#   PVESTRAP_WIZARD         command of the wizard   (default "pvestrap wizard")
#   PVESTRAP_TTY            the wizard's terminal   (default /dev/tty1)
# The commands and the options are split on blanks: no blanks inside one argument.

set -u

answers=${PVESTRAP_ANSWERS:-/etc/pvestrap/answers.toml}
state_dir=${PVESTRAP_STATE_DIR:-/var/lib/pvestrap}
firstboot=${PVESTRAP_FIRSTBOOT:-pvestrap firstboot}
firstboot_args=${PVESTRAP_FIRSTBOOT_ARGS:-}
wizard=${PVESTRAP_WIZARD:-pvestrap wizard}
tty=${PVESTRAP_TTY:-/dev/tty1}
done_marker=$state_dir/firstboot.done

say() { printf 'pvestrap-firstboot: %s\n' "$*"; }

if [ -e "$done_marker" ]; then
    say "finished already ($done_marker): nothing to do"
    exit 0
fi

if [ -f "$answers" ]; then
    say "answer file $answers: building the cluster unattended"
    # shellcheck disable=SC2086  # the command and its options are meant to be split
    exec $firstboot --answers "$answers" --state-dir "$state_dir" $firstboot_args
fi

# No answer file: a person at the console answers the wizard's questions.
say "no answer file at $answers: opening the wizard on $tty"
getty=""
if [ -d /run/systemd/system ] && [ "${tty#/dev/tty}" != "$tty" ]; then
    getty="getty@${tty#/dev/}.service"
    systemctl stop "$getty" 2>/dev/null || getty=""
    command -v chvt >/dev/null 2>&1 && chvt "${tty#/dev/tty}" 2>/dev/null
fi
# setsid --ctty makes the terminal the wizard's controlling one: Ctrl-C reaches it.
# shellcheck disable=SC2086
setsid --ctty --wait $wizard <"$tty" >"$tty" 2>&1
status=$?
if [ -n "$getty" ]; then
    systemctl start "$getty" 2>/dev/null
fi
if [ "$status" -eq 0 ]; then
    mkdir -p "$state_dir" &&
        printf '{"via": "wizard", "node": "%s", "time": "%s"}\n' "$(hostname)" \
            "$(date +%Y-%m-%dT%H:%M:%S%z)" >"$done_marker"
    say "the wizard finished: first boot done"
else
    say "the wizard ended with status $status: it opens again at the next boot" \
        "(or disable it: systemctl disable pvestrap-firstboot)"
fi
exit "$status"

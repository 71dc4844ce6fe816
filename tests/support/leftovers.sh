#!/usr/bin/env bash
# leftovers.sh RUN [GRACE] — fails if any process still carries
# GITGATE_TEST_RUN=RUN in its environment: something a test run started
# (gitgate serve, git daemon, node/chromium, the control plane of
# kube-up.sh, ...) that outlived it. The e2e control plane is stopped by a
# reaper once its test process has exited, so this waits up to GRACE
# seconds [60] for stragglers before it fails. Prints what it found.
set -euo pipefail
run="${1:?usage: leftovers.sh RUN [GRACE]}"
grace="${2:-60}"
needle="GITGATE_TEST_RUN=$run"

scan() {
  local dir pid
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    [ "$pid" = "$$" ] && continue
    [ "$(awk '{print $3}' "$dir/stat" 2>/dev/null)" = Z ] && continue
    if { tr '\0' '\n' <"$dir/environ"; } 2>/dev/null | grep -qxF "$needle"; then
      printf '%s %s\n' "$pid" "$({ tr '\0' ' ' <"$dir/cmdline"; } 2>/dev/null)"
    fi
  done
}

deadline=$((SECONDS + grace))
while :; do
  found="$(scan)"
  [ -z "$found" ] && { echo "no process of test run $run is left"; exit 0; }
  [ "$SECONDS" -ge "$deadline" ] && break
  sleep 1
done
echo "error: processes the test run $run started outlived it:" >&2
echo "$found" >&2
exit 1

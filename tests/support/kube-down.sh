#!/usr/bin/env bash
# kube-down.sh — stop the control plane started by kube-up.sh.
#
# Stops exactly the processes whose pids kube-up.sh saved under
# $KUBE_RUN_DIR/pids (kube-controller-manager, kube-apiserver, etcd, in that
# order). A pid is only signalled if it is still alive AND still runs the same
# executable it was started with (guards against pid reuse). Never kills by name.
#
# Required environment:
#   KUBE_RUN_DIR   the same state directory given to kube-up.sh
#   KUBE_BIN_DIR   optional; if set, the executable check also requires the
#                  process binary to live in this directory (or be etcd on PATH)
# Optional:
#   KUBE_WIPE=1    also delete etcd data, certs, kubeconfigs and logs
set -euo pipefail

: "${KUBE_RUN_DIR:?set KUBE_RUN_DIR to the state directory used by kube-up.sh}"
PIDS="$KUBE_RUN_DIR/pids"
log() { printf '[kube-down] %s\n' "$*" >&2; }

expected_name() {
  case "$1" in
    etcd) echo etcd ;;
    kube-apiserver) echo kube-apiserver ;;
    kube-controller-manager) echo kube-controller-manager ;;
  esac
}

stop_one() {
  local name="$1" pidf="$PIDS/$1.pid" pid exe want
  [ -s "$pidf" ] || { log "$name: no pid file"; return 0; }
  pid="$(cat "$pidf")"
  case "$pid" in ''|*[!0-9]*) log "$name: bad pid file"; rm -f "$pidf"; return 0 ;; esac
  if [ ! -d "/proc/$pid" ]; then
    log "$name: pid $pid not running"; rm -f "$pidf"; return 0
  fi
  exe="$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)"
  want="$(expected_name "$name")"
  if [ "$(basename "$exe")" != "$want" ]; then
    log "$name: pid $pid now runs '$exe', not $want; leaving it alone"
    rm -f "$pidf"; return 0
  fi
  if [ -n "${KUBE_BIN_DIR:-}" ] && [ "$name" != etcd ]; then
    if [ "$(dirname "$exe")" != "$(cd "$KUBE_BIN_DIR" && pwd -P)" ]; then
      log "$name: pid $pid runs $exe, outside KUBE_BIN_DIR; leaving it alone"
      rm -f "$pidf"; return 0
    fi
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    [ -d "/proc/$pid" ] || break
    # a zombie child of ours counts as gone
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
    log "$name (pid $pid) did not exit after 10s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

for n in kube-controller-manager kube-apiserver etcd; do
  stop_one "$n"
done

if [ "${KUBE_WIPE:-0}" = 1 ]; then
  log "wiping state in $KUBE_RUN_DIR"
  rm -rf "$KUBE_RUN_DIR/etcd-data" "$KUBE_RUN_DIR/pki" "$KUBE_RUN_DIR/logs" \
         "$KUBE_RUN_DIR/admin.kubeconfig" "$KUBE_RUN_DIR/controller-manager.kubeconfig" \
         "$KUBE_RUN_DIR/webhook-client.kubeconfig" "$KUBE_RUN_DIR/admission-config.yaml"
fi
log "down."

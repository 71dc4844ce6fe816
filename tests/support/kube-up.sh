#!/usr/bin/env bash
# kube-up.sh — start a single-node, loopback-only Kubernetes control plane
# (etcd + kube-apiserver + kube-controller-manager) from existing binaries.
#
# This script only STARTS prebuilt binaries; it builds nothing. The e2e
# suite (tests/support/cluster.rs) runs it on free ports; it also runs by
# hand, e.g. to capture AdmissionReview bodies (tests/fixtures/admission).
#
# Required environment:
#   KUBE_BIN_DIR   directory holding kube-apiserver, kube-controller-manager,
#                  kubectl and etcd (etcd may instead be on PATH)
#   KUBE_RUN_DIR   state directory (certs, etcd data, logs, pid files)
# Optional environment (defaults in brackets):
#   KUBE_APISERVER_PORT    [6443]   secure port of kube-apiserver
#   KUBE_ETCD_CLIENT_PORT  [2379]   etcd client port
#   KUBE_ETCD_PEER_PORT    [2380]   etcd peer port
#   KUBE_KCM_PORT          [10257]  kube-controller-manager secure port
#   KUBE_READY_TIMEOUT     [120]    seconds to wait for /readyz
#   KUBE_NO_CONTROLLER_MANAGER=1    start etcd + kube-apiserver only
#   KUBE_WEBHOOK_CLIENT_CERT=1      the apiserver presents a client certificate
#                  to every admission webhook it calls (an AdmissionConfiguration
#                  with a kubeConfigFile, as a cluster operator sets it up):
#                  $KUBE_RUN_DIR/pki/webhook-client.{crt,key}, CN
#                  "kube-apiserver-webhook-client", signed by $KUBE_RUN_DIR/pki/ca.crt.
#                  A webhook verifies callers against that CA.
#
# Everything listens on 127.0.0.1 only. The service CIDR 10.96.0.0/16 is an
# apiserver setting only; nothing is sent to it. The "kubernetes" Service is
# created but gets no Endpoints (--endpoint-reconciler-type=none), because
# Endpoints may not point at a loopback address.
#
# Output: $KUBE_RUN_DIR/admin.kubeconfig (cluster-admin via client cert).
# Stop with kube-down.sh (same KUBE_RUN_DIR); it stops only the pids saved here.
set -euo pipefail

: "${KUBE_BIN_DIR:?set KUBE_BIN_DIR to the directory with kube-apiserver, kube-controller-manager, kubectl, etcd}"
: "${KUBE_RUN_DIR:?set KUBE_RUN_DIR to a state directory}"
APISERVER_PORT="${KUBE_APISERVER_PORT:-6443}"
ETCD_CLIENT_PORT="${KUBE_ETCD_CLIENT_PORT:-2379}"
ETCD_PEER_PORT="${KUBE_ETCD_PEER_PORT:-2380}"
KCM_PORT="${KUBE_KCM_PORT:-10257}"
READY_TIMEOUT="${KUBE_READY_TIMEOUT:-120}"
HOST=127.0.0.1

KUBE_BIN_DIR="$(cd "$KUBE_BIN_DIR" && pwd)"
mkdir -p "$KUBE_RUN_DIR"
KUBE_RUN_DIR="$(cd "$KUBE_RUN_DIR" && pwd)"
PKI="$KUBE_RUN_DIR/pki"
LOGS="$KUBE_RUN_DIR/logs"
PIDS="$KUBE_RUN_DIR/pids"
mkdir -p "$PKI" "$LOGS" "$PIDS" "$KUBE_RUN_DIR/etcd-data"
chmod 700 "$PKI" "$KUBE_RUN_DIR/etcd-data"

log() { printf '[kube-up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_bin() {
  local name="$1"
  if [ -x "$KUBE_BIN_DIR/$name" ]; then echo "$KUBE_BIN_DIR/$name"; return; fi
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  die "$name not found in $KUBE_BIN_DIR or on PATH"
}
ETCD="$(find_bin etcd)"
APISERVER="$(find_bin kube-apiserver)"
KCM="$(find_bin kube-controller-manager)"
KUBECTL="$(find_bin kubectl)"
command -v openssl >/dev/null || die "openssl is required"
command -v curl >/dev/null || die "curl is required"

# ---------------------------------------------------------------- PKI ----
gen_ca() {
  [ -s "$PKI/ca.crt" ] && [ -s "$PKI/ca.key" ] && return
  log "generating cluster CA"
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -nodes -key "$PKI/ca.key" -sha256 -days 3650 \
    -subj "/CN=kube-local-ca" -out "$PKI/ca.crt" 2>/dev/null
}

# gen_cert NAME SUBJECT EXTKEYUSAGE [SAN]
gen_cert() {
  local name="$1" subj="$2" eku="$3" san="${4:-}"
  [ -s "$PKI/$name.crt" ] && [ -s "$PKI/$name.key" ] && return
  log "generating certificate $name"
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } > "$ext"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

gen_ca
# separate CA for the aggregation layer / request-header authentication,
# as kubeadm sets it up (front-proxy-ca + front-proxy-client)
if [ ! -s "$PKI/front-proxy-ca.crt" ] || [ ! -s "$PKI/front-proxy-ca.key" ]; then
  log "generating front-proxy CA"
  openssl genrsa -out "$PKI/front-proxy-ca.key" 2048 2>/dev/null
  openssl req -x509 -new -nodes -key "$PKI/front-proxy-ca.key" -sha256 -days 3650 \
    -subj "/CN=kube-local-front-proxy-ca" -out "$PKI/front-proxy-ca.crt" 2>/dev/null
fi
if [ ! -s "$PKI/front-proxy-client.crt" ] || [ ! -s "$PKI/front-proxy-client.key" ]; then
  log "generating certificate front-proxy-client"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$PKI/fp.ext"
  openssl genrsa -out "$PKI/front-proxy-client.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/front-proxy-client.key" -subj "/CN=front-proxy-client" -out "$PKI/fp.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/fp.csr" -CA "$PKI/front-proxy-ca.crt" -CAkey "$PKI/front-proxy-ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI/fp.ext" -out "$PKI/front-proxy-client.crt" 2>/dev/null
  rm -f "$PKI/fp.csr" "$PKI/fp.ext"
fi
gen_cert apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
gen_cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
gen_cert controller-manager "/CN=system:kube-controller-manager" clientAuth
if [ ! -s "$PKI/sa.key" ]; then
  log "generating service-account signing key"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
chmod 600 "$PKI"/*.key

# the apiserver's identity towards admission webhooks (optional)
ADMISSION_ARGS=()
if [ "${KUBE_WEBHOOK_CLIENT_CERT:-0}" = 1 ]; then
  gen_cert webhook-client "/CN=kube-apiserver-webhook-client" clientAuth
  chmod 600 "$PKI"/*.key
  cat > "$KUBE_RUN_DIR/webhook-client.kubeconfig" <<EOF
apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: $PKI/webhook-client.crt
    client-key: $PKI/webhook-client.key
EOF
  cat > "$KUBE_RUN_DIR/admission-config.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $KUBE_RUN_DIR/webhook-client.kubeconfig
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $KUBE_RUN_DIR/webhook-client.kubeconfig
EOF
  ADMISSION_ARGS=(--admission-control-config-file="$KUBE_RUN_DIR/admission-config.yaml")
fi

# ---------------------------------------------------------- kubeconfigs ----
write_kubeconfig() {
  local file="$1" user="$2" cert="$3" key="$4"
  cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://$HOST:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 < "$cert")
    client-key-data: $(base64 -w0 < "$key")
contexts:
- name: $user@local
  context:
    cluster: local
    user: $user
current-context: $user@local
EOF
  chmod 600 "$file"
}
write_kubeconfig "$KUBE_RUN_DIR/admin.kubeconfig" kubernetes-admin "$PKI/admin.crt" "$PKI/admin.key"
write_kubeconfig "$KUBE_RUN_DIR/controller-manager.kubeconfig" system:kube-controller-manager \
  "$PKI/controller-manager.crt" "$PKI/controller-manager.key"

# ------------------------------------------------------------ processes ----
# is_running NAME BIN: true if the saved pid is alive and runs BIN
is_running() {
  local pidf="$PIDS/$1.pid" pid exe
  [ -s "$pidf" ] || return 1
  pid="$(cat "$pidf")"
  [ -d "/proc/$pid" ] || return 1
  exe="$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)"
  [ "$exe" = "$(readlink -f "$2")" ]
}

# start NAME BIN ARGS...
start() {
  local name="$1" bin="$2"; shift 2
  if is_running "$name" "$bin"; then
    log "$name already running (pid $(cat "$PIDS/$name.pid"))"
    return
  fi
  log "starting $name"
  setsid "$bin" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$PIDS/$name.pid"
}

port_free() {
  ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

if ! is_running etcd "$ETCD"; then
  port_free "$ETCD_CLIENT_PORT" || die "port $ETCD_CLIENT_PORT on $HOST is in use (set KUBE_ETCD_CLIENT_PORT)"
fi
start etcd "$ETCD" \
  --name=kube-local \
  --data-dir="$KUBE_RUN_DIR/etcd-data" \
  --listen-client-urls="http://$HOST:$ETCD_CLIENT_PORT" \
  --advertise-client-urls="http://$HOST:$ETCD_CLIENT_PORT" \
  --listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
  --initial-cluster="kube-local=http://$HOST:$ETCD_PEER_PORT" \
  --listen-metrics-urls="http://$HOST:$((ETCD_CLIENT_PORT + 2))" \
  --quota-backend-bytes=4294967296 \
  --log-level=warn

for _ in $(seq 1 60); do
  curl -fsS "http://$HOST:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"' && break
  is_running etcd "$ETCD" || die "etcd exited; see $LOGS/etcd.log"
  sleep 0.5
done
curl -fsS "http://$HOST:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"' \
  || die "etcd not healthy; see $LOGS/etcd.log"

if ! is_running kube-apiserver "$APISERVER"; then
  port_free "$APISERVER_PORT" || die "port $APISERVER_PORT on $HOST is in use (set KUBE_APISERVER_PORT)"
fi
start kube-apiserver "$APISERVER" \
  --bind-address=$HOST \
  --advertise-address=$HOST \
  --secure-port="$APISERVER_PORT" \
  --etcd-servers="http://$HOST:$ETCD_CLIENT_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode=RBAC \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  --profiling=false \
  ${ADMISSION_ARGS[@]+"${ADMISSION_ARGS[@]}"} \
  --v=1

# kube-apiserver's /readyz; ok once RBAC bootstrap and the rest are done
ready=0
for _ in $(seq 1 "$((READY_TIMEOUT * 2))"); do
  out="$(curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$HOST:$APISERVER_PORT/readyz" 2>/dev/null || true)"
  if [ "$out" = "ok" ]; then ready=1; break; fi
  is_running kube-apiserver "$APISERVER" || die "kube-apiserver exited; see $LOGS/kube-apiserver.log"
  sleep 0.5
done
[ "$ready" = 1 ] || die "kube-apiserver not ready after ${READY_TIMEOUT}s; see $LOGS/kube-apiserver.log"
log "kube-apiserver ready at https://$HOST:$APISERVER_PORT"

if [ "${KUBE_NO_CONTROLLER_MANAGER:-0}" != 1 ]; then
  if ! is_running kube-controller-manager "$KCM"; then
    port_free "$KCM_PORT" || die "port $KCM_PORT on $HOST is in use (set KUBE_KCM_PORT)"
  fi
  start kube-controller-manager "$KCM" \
    --kubeconfig="$KUBE_RUN_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$KUBE_RUN_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$KUBE_RUN_DIR/controller-manager.kubeconfig" \
    --bind-address=$HOST \
    --secure-port="$KCM_PORT" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --leader-elect=false \
    --profiling=false \
    --v=1
  sleep 1
  is_running kube-controller-manager "$KCM" || die "kube-controller-manager exited; see $LOGS/kube-controller-manager.log"
fi

"$KUBECTL" --kubeconfig="$KUBE_RUN_DIR/admin.kubeconfig" version >/dev/null \
  || die "kubectl cannot reach the apiserver"
log "up. export KUBECONFIG=$KUBE_RUN_DIR/admin.kubeconfig"

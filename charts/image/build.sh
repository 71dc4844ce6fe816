#!/usr/bin/env bash
# Builds gitgate's container image without a Docker engine, with Debian's
# umoci and skopeo: an OCI image from scratch holding
#
#   /gitgate                      the binary (entrypoint)
#   the shared libraries `ldd` names for it and for git, and the dynamic loader
#   /usr/bin/git                  for the bundled example repository and
#                                 local-directory repositories (`serve` without --repo)
#   /etc/ssl/certs/ca-certificates.crt
#   /etc/passwd, /etc/group       root and nonroot (65532)
#   /tmp (1777), /var/lib/gitgate (65532, the working directory)
#
# running as 65532:65532, the user the Helm chart's securityContext names.
# The repository's Dockerfile builds the same contents with Docker.
#
# Usage:
#   charts/image/build.sh [--binary PATH] [--out DIR] [--tag TAG] [--archive FILE] [--check]
#
#   --binary PATH   the gitgate binary ($GITGATE_BINARY; default
#                   target/release/gitgate, built with `cargo build --release
#                   --locked` when missing)
#   --out DIR       the OCI layout to write ($OUT; default target/image/oci);
#                   the image is tagged TAG in it
#   --tag TAG       default: the binary's version (`gitgate --version`)
#   --archive FILE  also write an `oci-archive:` tarball (e.g. for
#                   `skopeo copy oci-archive:FILE docker://registry/gitgate:TAG`)
#   --check         after building (or, with --no-build, on an existing
#                   layout), prove the image works: its config names user
#                   65532 and entrypoint /gitgate, its labels are set, and the
#                   binary started from the unpacked root filesystem prints
#                   its version and answers GET /healthz over HTTPS
#   --no-build      only --check the image already in --out
#
# Push: skopeo copy oci:DIR:TAG docker://registry.example.com/gitgate:TAG
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
binary=${GITGATE_BINARY:-}
out=${OUT:-$root/target/image/oci}
tag=""
archive=""
check=false
build=true

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --archive) archive=$2; shift 2 ;;
    --check) check=true; shift ;;
    --no-build) build=false; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

for tool in umoci skopeo ldd tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build.sh: needs $tool (apt-get install umoci skopeo)" >&2; exit 1; }
done

work=$(mktemp -d)
cleanup() {
  if [ -n "${serve_pid:-}" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The dynamic loader and libraries ldd names for a binary, one path a line.
libraries() {
  ldd "$1" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3 }
    $1 ~ /^\// { print $1 }
  '
}

build_image() {
  if [ -z "$binary" ]; then
    binary=$root/target/release/gitgate
    if [ ! -x "$binary" ]; then
      echo "== cargo build --release --locked (no $binary yet)"
      (cd "$root" && cargo build --release --locked)
    fi
  fi
  [ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }
  local version
  version=$("$binary" --version | awk '{print $2}')
  [ -n "$tag" ] || tag=$version
  local git_bin
  git_bin=$(command -v git) || { echo "build.sh: needs git (its binary goes into the image)" >&2; exit 1; }

  local stage=$work/rootfs
  mkdir -p "$stage"/{etc/ssl/certs,tmp,var/lib/gitgate,home/nonroot,usr/bin}
  install -m 0755 "$binary" "$stage/gitgate"
  install -m 0755 "$git_bin" "$stage/usr/bin/git"
  # Libraries at the paths ldd names (real files: no symlinks into the host).
  { libraries "$binary"; libraries "$git_bin"; } | sort -u | while read -r lib; do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
    chmod 0755 "$stage$lib"
  done
  [ -f /etc/ssl/certs/ca-certificates.crt ] || { echo "build.sh: no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates)" >&2; exit 1; }
  cp -L /etc/ssl/certs/ca-certificates.crt "$stage/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$stage/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$stage/etc/group"
  chmod 1777 "$stage/tmp"

  # One layer, owners set in the archive (no root needed): everything is
  # root's but the nonroot user's home and working directory.
  local epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
  local layer=$work/layer.tar
  local tar_opts=(--format=posix --pax-option=delete=atime,delete=ctime --mtime="@$epoch" --numeric-owner --no-recursion)
  (cd "$stage" && find . -mindepth 1 ! -path ./var/lib/gitgate ! -path ./home/nonroot | LC_ALL=C sort \
    | tar -cf "$layer" "${tar_opts[@]}" --owner=0 --group=0 -T -)
  (cd "$stage" && tar -rf "$layer" "${tar_opts[@]}" --owner=65532 --group=65532 ./var/lib/gitgate ./home/nonroot)

  local created
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  local revision
  revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  umoci init --layout "$out"
  umoci new --image "$out:$tag"
  umoci raw add-layer --image "$out:$tag" --history.created "$created" \
    --history.created_by "charts/image/build.sh" "$layer"
  umoci config --image "$out:$tag" \
    --created "$created" --history.created "$created" --history.created_by "charts/image/build.sh" \
    --os linux --architecture "$(dpkg --print-architecture 2>/dev/null || echo amd64)" \
    --config.user 65532:65532 \
    --config.entrypoint /gitgate \
    --config.workingdir /var/lib/gitgate \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.exposedports 8443/tcp \
    --config.label org.opencontainers.image.title=gitgate \
    --config.label "org.opencontainers.image.description=Git is the only deploy path: GitOps sync loop, admission webhooks, age/Vault secrets bridge, audit log" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label "org.opencontainers.image.created=$created" \
    --config.label org.opencontainers.image.licenses=Apache-2.0
  umoci gc --layout "$out"
  echo "== built oci:$out:$tag"
  if [ -n "$archive" ]; then
    rm -f "$archive"
    skopeo copy --quiet "oci:$out:$tag" "oci-archive:$archive:$tag"
    echo "== wrote oci-archive:$archive"
  fi
}

fail() { echo "build.sh --check: $*" >&2; exit 1; }

check_image() {
  if [ -z "$tag" ]; then
    tag=$(sed -n 's/.*"org.opencontainers.image.ref.name":"\([^"]*\)".*/\1/p' "$out/index.json" | head -1)
  fi
  [ -n "$tag" ] || fail "no tagged image in $out"
  local ref="oci:$out:$tag"
  echo "== skopeo inspect $ref"
  local inspect config
  inspect=$(skopeo inspect "$ref")
  config=$(skopeo inspect --config "$ref")
  echo "$inspect"
  # The config, compacted so the checks below are plain substring tests.
  config=$(tr -d ' \n' <<<"$config")
  inspect=$(tr -d ' \n' <<<"$inspect")
  [[ $config == *'"User":"65532:65532"'* ]] || fail "the image does not run as 65532:65532: $config"
  [[ $config == *'"Entrypoint":["/gitgate"]'* ]] || fail "the entrypoint is not /gitgate: $config"
  for label in title version revision created licenses; do
    [[ $inspect == *"\"org.opencontainers.image.$label\":"* ]] || fail "no org.opencontainers.image.$label label"
  done

  echo "== umoci raw unpack"
  local rootfs=$work/unpacked
  local unpack=(umoci raw unpack --image "$out:$tag" "$rootfs")
  [ "$(id -u)" = 0 ] || unpack=(umoci raw unpack --rootless --image "$out:$tag" "$rootfs")
  "${unpack[@]}"
  [ -x "$rootfs/gitgate" ] || fail "no /gitgate in the image"
  [ -f "$rootfs/etc/ssl/certs/ca-certificates.crt" ] || fail "no CA certificates in the image"
  grep -q '^nonroot:x:65532:65532:' "$rootfs/etc/passwd" || fail "no user 65532 in /etc/passwd"

  # Run the binary from the image's own root, as a runtime would: as root,
  # enter it (nsenter --root, a chroot that keeps the image's working
  # directory) as 65532;
  # otherwise through the image's dynamic loader and library directories.
  local run base data
  if [ "$(id -u)" = 0 ] && command -v nsenter >/dev/null 2>&1; then
    run=(nsenter --root="$rootfs" --wd="$rootfs/var/lib/gitgate" -S 65532 -G 65532)
    # The device nodes a container runtime provides in /dev.
    mkdir -p "$rootfs/dev"
    mknod -m 0666 "$rootfs/dev/null" c 1 3
    mknod -m 0666 "$rootfs/dev/zero" c 1 5
    mknod -m 0666 "$rootfs/dev/urandom" c 1 9
    base="" data=/tmp
  else
    local loader libdirs
    loader=$(cd "$rootfs" && { ls lib64/ld-linux-*.so.* lib/ld-linux*.so.* 2>/dev/null || true; } | head -1)
    [ -n "$loader" ] || fail "no dynamic loader in the image"
    libdirs=$(cd "$rootfs" && find . -name 'lib*.so*' -printf '%h\n' | sort -u | sed "s|^\.|$rootfs|" | paste -sd:)
    run=("$rootfs/$loader" --library-path "$libdirs")
    base=$rootfs data=$work
  fi

  echo "== gitgate --version (from the image)"
  local version
  version=$("${run[@]}" "$base/gitgate" --version) || fail "the binary does not start from the image"
  echo "$version"
  [[ $version == gitgate\ * ]] || fail "unexpected --version output: $version"

  echo "== gitgate serve (from the image), GET /healthz"
  local log=$work/serve.log
  (cd "$work"
    exec "${run[@]}" "$base/gitgate" serve --listen 127.0.0.1:0 --sync off \
      --cert-dir "$data/certs" --git-cache "$data/git" --audit-log "$data/audit.jsonl" --log-format text) \
    >"$log" 2>&1 &
  serve_pid=$!
  local addr="" i
  for i in $(seq 1 300); do
    addr=$(sed -n 's/.*listening on https:\/\/\([0-9.:]*\).*/\1/p' "$log" | head -1)
    [ -n "$addr" ] && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$log" >&2; fail "gitgate serve exited"; }
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$log" >&2; fail "gitgate serve did not listen within 30s"; }
  local ca=$data/certs/ca.crt
  [ -n "$base" ] || ca=$rootfs$data/certs/ca.crt
  local body
  body=$(curl -sS --fail --max-time 10 --cacert "$ca" "https://$addr/healthz") || { cat "$log" >&2; fail "GET https://$addr/healthz failed"; }
  echo "GET https://$addr/healthz: $body"
  # Ready once the first commit (the bundled example, committed with the
  # image's git, rendered) is in force.
  body=""
  for i in $(seq 1 300); do
    body=$(curl -sS --fail --max-time 10 --cacert "$ca" "https://$addr/readyz" 2>/dev/null) && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$log" >&2; fail "gitgate serve exited"; }
    sleep 0.1
  done
  [ -n "$body" ] || { cat "$log" >&2; fail "GET https://$addr/readyz never answered 200"; }
  echo "GET https://$addr/readyz: $body"
  kill "$serve_pid"
  wait "$serve_pid" 2>/dev/null || true
  serve_pid=""
  echo "== the image works"
}

if $build; then build_image; fi
if $check; then check_image; fi

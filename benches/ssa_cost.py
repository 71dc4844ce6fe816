#!/usr/bin/env python3
"""What a server-side apply with gitgate's stamps costs the kube-apiserver.

Against a running control plane (e.g. `tests/support/kube-up.sh` with
KUBE_BIN_DIR, KUBE_RUN_DIR and free ports set), 16 threads write 1,000
ConfigMaps per cell, each cell in a fresh namespace, and the apiserver's CPU
per object is read from /proc:

  python3 benches/ssa_cost.py https://127.0.0.1:PORT $KUBE_RUN_DIR/pki \\
      "$(cat $KUBE_RUN_DIR/pids/kube-apiserver.pid)" [ROUNDS]

Cells: a plain create; a plain apply; an apply with the three gitgate.dev/*
annotations and the app label (what the sync loop sends); the same with the
reply asked as PartialObjectMetadata or protobuf; the same with
fieldValidation=Ignore and Strict. BENCHMARKS.md (issue 5) has the results.
"""

import json
import sys
import threading
import time

import requests

N, THREADS = 1000, 16
JSON = "application/json"
META = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PROTO = "application/vnd.kubernetes.protobuf"
CELLS = {
    "create": ("create", False, JSON, ""),
    "apply": ("apply", False, JSON, ""),
    "apply + stamps": ("apply", True, JSON, ""),
    "apply + stamps, reply as metadata": ("apply", True, META, ""),
    "apply + stamps, reply as protobuf": ("apply", True, PROTO, ""),
    "apply + stamps, fieldValidation=Ignore": ("apply", True, JSON, "&fieldValidation=Ignore"),
    "apply + stamps, fieldValidation=Strict": ("apply", True, JSON, "&fieldValidation=Strict"),
}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def session(pki):
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    s.verify = f"{pki}/ca.crt"
    s.cert = (f"{pki}/admin.crt", f"{pki}/admin.key")
    return s


def configmap(name, stamped):
    o = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"value": "1"}}
    if stamped:
        o["metadata"]["labels"] = {"gitgate.dev/app": "bench"}
        o["metadata"]["annotations"] = {
            "gitgate.dev/commit": "0123456789abcdef0123456789abcdef01234567",
            "gitgate.dev/source": f"bench:app/{name}.yaml",
            "gitgate.dev/digest": "sha256:" + "0123456789abcdef" * 4,
        }
    return o


def cell(server, pki, pid, ns, how):
    verb, stamped, accept, params = how
    admin = session(pki)
    r = admin.post(f"{server}/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    r.raise_for_status()
    time.sleep(0.5)
    base = f"{server}/api/v1/namespaces/{ns}/configmaps"
    lock, next_index, errors = threading.Lock(), [0], []
    barrier = threading.Barrier(THREADS + 1)

    def worker():
        s = session(pki)
        barrier.wait()
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= N:
                return
            body = json.dumps(configmap(f"c-{i}", stamped))
            if verb == "create":
                r = s.post(base, data=body, headers={"Content-Type": JSON, "Accept": accept})
            else:
                r = s.patch(
                    f"{base}/c-{i}?fieldManager=gitgate&force=true{params}",
                    data=body,
                    headers={"Content-Type": "application/apply-patch+yaml", "Accept": accept},
                )
            if r.status_code not in (200, 201):
                errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    c0 = cpu_seconds(pid)
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    c1 = cpu_seconds(pid)
    if errors:
        sys.exit(f"{len(errors)} writes failed, first: {errors[0]}")
    return N / wall, (c1 - c0) * 1000.0 / N


def main():
    server, pki, pid = sys.argv[1], sys.argv[2], sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    results = {name: [] for name in CELLS}
    stamp = int(time.time())
    for r in range(rounds):
        for k, (name, how) in enumerate(CELLS.items()):
            results[name].append(cell(server, pki, pid, f"ssa-cost-{stamp}-{r}-{k}", how))
            time.sleep(1)
    for name, rs in results.items():
        print(
            f"{name:40s} objects/s "
            + " ".join(f"{t:5.0f}" for t, _ in rs)
            + "   apiserver CPU ms/object "
            + " ".join(f"{c:.2f}" for _, c in rs)
        )


if __name__ == "__main__":
    main()

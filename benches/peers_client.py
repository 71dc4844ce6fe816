#!/usr/bin/env python3
"""The peers' published parallel-create client, workload (ii).

The peer figures (no policy, a built-in VAP, Gatekeeper, a Python echo
webhook) were measured with this client: 16 threads, one keep-alive
`requests` session per thread, each thread sends one untimed warm-up create,
then all start together at a barrier and POST labelled ConfigMaps until
`--count` are made; the wall clock runs from the barrier's release to the
last response. `benches/apiserver_webhook.rs` runs it beside its own kube-rs
client so that gitgate's ratio can be set beside the peers' on the same
harness.

Prints one JSON line: {"objects_per_s": ..., "p50_ms": ..., "p99_ms": ...}.
"""

import argparse
import json
import sys
import threading
import time

try:
    import requests
except ImportError:  # the bench says so and skips this phase
    print(json.dumps({"error": "python module `requests` is not installed"}))
    sys.exit(3)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--prefix", default="py")
    p.add_argument(
        "--deployments",
        type=int,
        default=0,
        help="make the last N objects Deployments (replicas 0), as benches/sync.rs's mix",
    )
    a = p.parse_args()

    cm_url = f"{a.server}/api/v1/namespaces/{a.namespace}/configmaps"
    deploy_url = f"{a.server}/apis/apps/v1/namespaces/{a.namespace}/deployments"
    lock = threading.Lock()
    next_index = [0]
    latencies = []
    errors = []
    barrier = threading.Barrier(a.threads + 1)
    done = []

    def body(name):
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"owner": "x"}},
            "data": {"k": "v"},
        }

    def deployment(name):
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": f"registry.example.invalid/{name}:1"}]},
                },
            },
        }

    def create(s, i):
        if i >= a.count - a.deployments:
            return s.post(deploy_url, json=deployment(f"{a.prefix}-{i}"))
        return s.post(cm_url, json=body(f"{a.prefix}-{i}"))

    def worker(t):
        s = requests.Session()
        # REQUESTS_CA_BUNDLE in the environment would override s.verify
        s.trust_env = False
        s.verify = a.ca
        s.cert = (a.cert, a.key)
        try:
            r = s.post(cm_url, json=body(f"{a.prefix}-warm-{t}"))
            if r.status_code != 201:
                errors.append(f"warm-up: {r.status_code} {r.text[:200]}")
        except Exception as e:  # noqa: BLE001 - reported, and the barrier still releases
            errors.append(f"warm-up: {e}")
        barrier.wait()
        if errors:
            return
        mine = []
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= a.count:
                break
            t0 = time.perf_counter()
            try:
                r = create(s, i)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(str(e))
                break
            mine.append((time.perf_counter() - t0) * 1000.0)
            if r.status_code != 201:
                errors.append(f"{r.status_code} {r.text[:200]}")
        with lock:
            latencies.extend(mine)
            done.append(time.perf_counter())

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(a.threads)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        print(json.dumps({"error": f"{len(errors)} creates failed, first: {errors[0]}"}))
        sys.exit(1)
    wall = max(done) - start
    latencies.sort()

    def pct(q):
        return latencies[min(int(len(latencies) * q), len(latencies) - 1)]

    print(json.dumps({"objects_per_s": a.count / wall, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}))


if __name__ == "__main__":
    main()

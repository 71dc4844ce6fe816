#!/usr/bin/env python3
"""A `helm` command line over the real Helm v4 engine (libhelm_c, shipped by
PyPI's helm-python-sdk), for tests on machines without a helm binary:
`pip install helm-python-sdk`, then point GITGATE_HELM (or
RenderOptions.helm) at this file.

Supports what gitgate calls: `version --short` and
`template RELEASE CHART [--namespace NS] [--values FILE]...`, printing each
rendered template as `helm template` does (`---` + `# Source: chart/path`).
"""
import sys

import helm_python
from helm_python.chart import Chart, values_from_yaml


def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def main(argv):
    if argv[:1] == ["version"]:
        print("v4 (libhelm_c %s)" % getattr(helm_python, "__version__", "?"))
        return 0
    if argv[:1] != ["template"] or len(argv) < 3:
        print("usage: helm template RELEASE CHART [--namespace NS] [--values FILE]...", file=sys.stderr)
        return 2
    release, chart_dir = argv[1], argv[2]
    namespace, values, rest = None, {}, argv[3:]
    while rest:
        flag = rest.pop(0)
        if flag in ("--namespace", "-n"):
            namespace = rest.pop(0)
        elif flag in ("--values", "-f"):
            with open(rest.pop(0)) as f:
                merge(values, values_from_yaml(f.read()) or {})
        else:
            print("unsupported flag %s" % flag, file=sys.stderr)
            return 2
    chart = Chart.load(chart_dir)
    out = chart.render(values, name=release, namespace=namespace or "default", is_install=True)
    for path in sorted(out):
        body = out[path].strip()
        if not body or path.endswith("NOTES.txt"):
            continue
        print("---\n# Source: %s\n%s" % (path, body))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # the message goes to stderr, as helm's would
        print("Error: %s" % e, file=sys.stderr)
        sys.exit(1)

#!/usr/bin/env python3
"""A `helm` command line over the real Helm v4 engine (libhelm_c, shipped by
PyPI's helm-python-sdk), for tests on machines without a helm binary:
`pip install helm-python-sdk`, then point GITGATE_HELM (or
RenderOptions.helm) at this file.

Supports what gitgate calls: `version --short` and
`template RELEASE CHART [--namespace NS] [--values FILE]...`, printing each
rendered template as `helm template` does (`---` + `# Source: chart/path`);
and what the chart's tests call: `lint [--strict] CHART [--namespace NS]
[--values FILE]...`, printing findings as `helm lint` does and exiting 1 when
the chart fails (with --strict, warnings fail it too).
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


SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def options(rest):
    """--namespace and --values flags; returns (namespace, values, strict)."""
    namespace, values, strict = None, {}, False
    while rest:
        flag = rest.pop(0)
        if flag in ("--namespace", "-n"):
            namespace = rest.pop(0)
        elif flag in ("--values", "-f"):
            with open(rest.pop(0)) as f:
                merge(values, values_from_yaml(f.read()) or {})
        elif flag == "--strict":
            strict = True
        else:
            raise ValueError("unsupported flag %s" % flag)
    return namespace, values, strict


def lint(argv):
    chart_dir = next((a for i, a in enumerate(argv) if not a.startswith("-")
                      and (i == 0 or argv[i - 1] not in ("--namespace", "-n", "--values", "-f"))), None)
    if chart_dir is None:
        print("usage: helm lint [--strict] CHART [--namespace NS] [--values FILE]...", file=sys.stderr)
        return 2
    rest = list(argv)
    rest.remove(chart_dir)
    namespace, values, strict = options(rest)
    report = helm_python.lint(chart_dir, values, strict=strict, namespace=namespace or "default")
    print("==> Linting %s" % chart_dir)
    failed = bool(report.get("errors"))
    for m in report.get("messages", []):
        sev = m.get("severity", 0)
        print("[%s] %s: %s" % (SEVERITY.get(sev, "UNKNOWN"), m.get("path", ""), m.get("error", "").strip()))
        if sev >= 3 or (strict and sev >= 2):
            failed = True
    print("\n1 chart(s) linted, %d chart(s) failed" % (1 if failed else 0))
    return 1 if failed else 0


def main(argv):
    if argv[:1] == ["version"]:
        print("v4 (libhelm_c %s)" % getattr(helm_python, "__version__", "?"))
        return 0
    if argv[:1] == ["lint"]:
        return lint(argv[1:])
    if argv[:1] != ["template"] or len(argv) < 3:
        print("usage: helm template RELEASE CHART [--namespace NS] [--values FILE]...", file=sys.stderr)
        return 2
    release, chart_dir = argv[1], argv[2]
    try:
        namespace, values, strict = options(argv[3:])
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if strict:
        print("unsupported flag --strict", file=sys.stderr)
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

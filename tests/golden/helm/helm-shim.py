#!/usr/bin/env python3
"""A `helm` command line over the real Helm v4 engine (libhelm_c, shipped by
PyPI's helm-python-sdk), for tests on machines without a helm binary:
`pip install helm-python-sdk`, then point GITGATE_HELM (or
RenderOptions.helm) at this file.

Supports what gitgate calls: `version --short` and
`template [flags] [--] RELEASE CHART`, printing each rendered template as
`helm template` does (`---` + `# Source: chart/path`); and what the chart's
tests call: `lint [--strict] CHART [flags]`, printing findings as
`helm lint` does and exiting 1 when the chart fails (with --strict, warnings
fail it too).

Arguments are parsed the way helm's (cobra/pflag) are, so a test sees what
the real command line would make of them: flags may stand anywhere, as
`--flag value` or `--flag=value`; `--` ends the flags; an unknown flag is an
error. Flags: --namespace/-n, --values/-f, --set-file KEY=PATH (the file's
content as a value, read after the values files, as helm does),
--repository-config, --registry-config, --repository-cache (accepted:
nothing is fetched), --strict (lint only).
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

# Flag → what it sets (None: accepted and ignored).
VALUE_FLAGS = {
    "--namespace": "namespace",
    "-n": "namespace",
    "--values": "values",
    "-f": "values",
    "--set-file": "set-file",
    "--repository-config": None,
    "--registry-config": None,
    "--repository-cache": None,
}
BOOL_FLAGS = {"--strict": "strict"}


def parse(argv):
    """pflag-style parsing: returns (positionals, [(name, value)])."""
    positionals, flags = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positionals.extend(argv[i + 1:])
            break
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if name in BOOL_FLAGS:
                flags.append((BOOL_FLAGS[name], True))
            elif name in VALUE_FLAGS:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise ValueError("flag needs an argument: %s" % name)
                    value = argv[i]
                if VALUE_FLAGS[name] is not None:
                    flags.append((VALUE_FLAGS[name], value))
            else:
                raise ValueError("unknown flag: %s" % name)
        else:
            positionals.append(arg)
        i += 1
    return positionals, flags


def options(flags):
    """(namespace, values, strict) from parsed flags."""
    namespace, values, strict, set_files = None, {}, False, []
    for name, value in flags:
        if name == "namespace":
            namespace = value
        elif name == "values":
            with open(value) as f:
                merge(values, values_from_yaml(f.read()) or {})
        elif name == "set-file":
            set_files.append(value)
        elif name == "strict":
            strict = True
    for spec in set_files:
        key, eq, path = spec.partition("=")
        if not eq or not key:
            raise ValueError("--set-file needs KEY=PATH, got %r" % spec)
        with open(path, errors="replace") as f:
            content = f.read()
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = content
    return namespace, values, strict


def lint(argv):
    positionals, flags = parse(argv)
    if len(positionals) != 1:
        print("usage: helm lint [--strict] CHART [--namespace NS] [--values FILE]...", file=sys.stderr)
        return 2
    chart_dir = positionals[0]
    namespace, values, strict = options(flags)
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


def template(argv):
    positionals, flags = parse(argv)
    namespace, values, strict = options(flags)
    if strict:
        raise ValueError("unknown flag: --strict")
    # `helm template [NAME] [CHART]`: a single argument is the chart.
    if len(positionals) == 1:
        release, chart_dir = "release-name", positionals[0]
    elif len(positionals) == 2:
        release, chart_dir = positionals
    else:
        print("usage: helm template [flags] [--] RELEASE CHART", file=sys.stderr)
        return 2
    chart = Chart.load(chart_dir)
    out = chart.render(values, name=release, namespace=namespace or "default", is_install=True)
    for path in sorted(out):
        body = out[path].strip()
        if not body or path.endswith("NOTES.txt"):
            continue
        print("---\n# Source: %s\n%s" % (path, body))
    return 0


def main(argv):
    if argv[:1] == ["version"]:
        print("v4 (libhelm_c %s)" % getattr(helm_python, "__version__", "?"))
        return 0
    if argv[:1] == ["lint"]:
        return lint(argv[1:])
    if argv[:1] == ["template"]:
        return template(argv[1:])
    print("usage: helm template [flags] [--] RELEASE CHART", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # the message goes to stderr, as helm's would
        print("Error: %s" % e, file=sys.stderr)
        sys.exit(1)

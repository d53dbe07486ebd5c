#!/usr/bin/python3
"""docs/RELIABILITY.md's figures besides the torture run: hostile values and
rule files fuzzed, from the JSON files their runs leave in build/reliability:

    hostile*.json   tests/test_hostile_values.py (vif), tests/test_hostile_block.py
                    (block, hooks): values tried, failures, what was accepted
    fuzz.json       `make fuzz` (tools/fuzz.py): cases, findings, time

tools/torture.py's write_report() puts sections() into the page and ends it
with embed(): the whole result as one JSON comment, so the page can be
rendered again from it (`make reliability-report` refreshes the hostile and
fuzz figures without a new torture run; tests/test_docs.py checks that the
committed page is exactly what its embedded figures render to).

    /usr/bin/python3 tools/reliability_report.py [--check] [--torture FILE]
"""
import argparse
import glob
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(REPO_ROOT, "build", "reliability")
PAGE = os.path.join(REPO_ROOT, "docs", "RELIABILITY.md")
EMBED = "<!-- figures, rendered by tools/reliability_report.py; do not edit: "
# suites written before they named themselves
SUITES = {"hostile.json": "tests/test_hostile_values.py (vif-bridge: bridge, vifname, mtu, ip, "
                          "frontend, argv/env, XENBUS_PATH)"}


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load(directory=FIGURES):
    """{"fuzz": fuzz.json or None, "hostile": [each hostile*.json, with its file name]}."""
    hostile = []
    for path in sorted(glob.glob(os.path.join(directory, "hostile*.json"))):
        data = _load(path)
        if isinstance(data, dict):
            hostile.append(dict(data, file=os.path.basename(path)))
    return {"fuzz": _load(os.path.join(directory, "fuzz.json")), "hostile": hostile}


def _suite(h):
    suite = h.get("suite") or SUITES.get(h.get("file"), h.get("file", "?"))
    what = h.get("what")
    return "%s (%s)" % (suite, what) if what and what not in suite else suite


def sections(other):
    """Markdown lines: the hostile values and rule files fuzzed, goal 0 failures."""
    hostile = other.get("hostile") or []
    lines = ["## Hostile values (issue 9 point 4)", ""]
    if not hostile:
        lines += ["Not run: `pytest tests/test_hostile_values.py tests/test_hostile_block.py`"
                  " writes build/reliability/hostile*.json.", ""]
    else:
        lines += ["| suite | values tried | failures (goal 0) | accepted |", "|---|---|---|---|"]
        for h in hostile:
            accepted = ", ".join("`%s`" % a.replace("|", "\\|").replace("`", "'")
                                 for a in h.get("accepted") or []) or "none"
            lines.append("| %s | %d | %d | %s |" % (_suite(h), h.get("values tried", 0),
                                                    h.get("failures", 0), accepted[:300]))
        lines.append("| **total** | %d | %d | |" % (
            sum(h.get("values tried", 0) for h in hostile), sum(h.get("failures", 0) for h in hostile)))
        lines += ["", "A value fails when the event exits 0, gives no hotplug-error, changes the"
                  " namespace, the xenstore tree or the loop devices, creates a file, runs the"
                  " original, or reaches a hook's bash as code.", ""]
    fuzz = other.get("fuzz")
    lines += ["## Rule files fuzzed (issue 9 point 5, `make fuzz`)", ""]
    if not fuzz:
        lines += ["Not run: `make fuzz` writes build/reliability/fuzz.json.", ""]
    else:
        findings = fuzz.get("findings") or []
        lines += ["| figure | value |", "|---|---|",
                  "| rule files fuzzed (mutants of rules.d + hypothesis-made) | %d |" % fuzz.get("cases", 0),
                  "| valid | %d |" % fuzz.get("valid", 0),
                  "| refused with file:line:col problems | %d |" % fuzz.get("with_problems", 0),
                  "| failures: traceback, hang or placeless problem (goal 0) | %d |" % len(findings),
                  "| workers lost (goal 0) | %d |" % fuzz.get("workers_lost", 0),
                  "| running time | %.1f s |" % fuzz.get("seconds", 0),
                  "| seed of the mutants | %s |" % fuzz.get("seed"),
                  "| memory limit per worker | %d MiB |" % (fuzz.get("memory_limit_bytes", 0) >> 20),
                  ""]
        lines += ["- %s: %s" % (f.get("file"), str(f.get("finding")).replace("\n", " ")[:200])
                  for f in findings[:20]]
        if findings:
            lines.append("")
    return lines


def summary_line(other):
    """One line for `make torture`'s output."""
    hostile = other.get("hostile") or []
    fuzz = other.get("fuzz")
    h = ("hostile values: %d tried, %d failures" % (
        sum(x.get("values tried", 0) for x in hostile), sum(x.get("failures", 0) for x in hostile))
         if hostile else "hostile values: not run")
    f = ("rule files fuzzed: %d, %d failures" % (fuzz.get("cases", 0), len(fuzz.get("findings") or []))
         if fuzz else "rule files fuzzed: not run")
    return "%s; %s" % (h, f)


def embed(result):
    """The page's last line: the figures it was rendered from."""
    return EMBED + json.dumps(result, sort_keys=True).replace("--", "-\\u002d") + " -->"


def extract(text):
    """The figures embedded by embed(), or None."""
    for line in reversed(text.splitlines()):
        if line.startswith(EMBED) and line.endswith(" -->"):
            return json.loads(line[len(EMBED):-len(" -->")])
    return None


def render(result):
    """The page for a result, as tools/torture.py writes it."""
    import tempfile
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torture
    with tempfile.NamedTemporaryFile("r", prefix="xr-reliability-", suffix=".md") as tmp:
        torture.write_report(result, tmp.name)
        return open(tmp.name).read()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="only say whether docs/RELIABILITY.md is what its own figures render to")
    p.add_argument("--torture", help="the torture result to use (default: the page's own figures)")
    a = p.parse_args(argv)
    with open(PAGE) as f:
        page = f.read()
    result = extract(page)
    if a.check:
        same = result is not None and render(result) == page
        print("docs/RELIABILITY.md %s" % ("matches its figures" if same else
                                          "is not what its figures render to"))
        return 0 if same else 1
    if a.torture:
        result = _load(a.torture)
    if result is None:
        print("no torture figures: run `make torture` (or give --torture FILE)", file=sys.stderr)
        return 1
    result["other"] = load()
    with open(PAGE + ".tmp", "w") as out:
        out.write(render(result))
    os.replace(PAGE + ".tmp", PAGE)
    print(summary_line(result["other"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

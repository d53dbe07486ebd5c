"""The README's reference tables name every step type and variable source."""
import os

from conftest import REPO_ROOT
from xenrules.sources import all_source_kinds
from xenrules.steps import all_step_types


def _readme():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_step_table_has_a_row_for_every_step_type():
    readme = _readme()
    missing = [n for n in all_step_types() if f"| `{n}` |" not in readme]
    assert not missing, f"README.md has no step-table row for {missing}"


def test_readme_lists_every_plugged_variable_source():
    readme = _readme()
    missing = [k for k in all_source_kinds() if f"| `{k}` |" not in readme]
    assert not missing, f"README.md does not list the sources {missing}"


def test_readme_links_a_guide_for_every_shipped_rule_file():
    readme = _readme()
    shipped = sorted(f for f in os.listdir(os.path.join(REPO_ROOT, "rules.d")) if f.endswith(".yaml"))
    missing = [f for f in shipped if f"`rules.d/{f}`" not in readme]
    assert not missing, f"README.md's rule-set table misses {missing}"


def _reliability_report():
    import sys
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    import reliability_report
    return reliability_report


def test_reliability_page_is_exactly_what_its_embedded_figures_render_to():
    # docs/RELIABILITY.md is generated (tools/torture.py, make reliability-report): a hand edit,
    # or a renderer changed without regenerating, shows here
    report = _reliability_report()
    with open(report.PAGE, encoding="utf-8") as f:
        page = f.read()
    result = report.extract(page)
    assert result is not None, "docs/RELIABILITY.md carries no figures: run make reliability-report"
    assert report.render(result) == page


def test_reliability_page_shows_hostile_values_and_rule_files_fuzzed_with_their_failures():
    report = _reliability_report()
    with open(report.PAGE, encoding="utf-8") as f:
        result = report.extract(f.read())
    hostile, fuzz = result["other"]["hostile"], result["other"]["fuzz"]
    suites = {h["file"] for h in hostile}
    assert {"hostile.json", "hostile-block.json"} <= suites, suites
    assert sum(h["values tried"] for h in hostile) > 200 and fuzz["cases"] >= 10000
    text = "\n".join(report.sections(result["other"]))
    assert "| **total** | %d | %d |" % (sum(h["values tried"] for h in hostile),
                                        sum(h["failures"] for h in hostile)) in text
    assert "| rule files fuzzed (mutants of rules.d + hypothesis-made) | %d |" % fuzz["cases"] in text
    assert "goal 0) | %d |" % len(fuzz["findings"]) in text


def test_reliability_sections_say_not_run_without_figures(tmp_path):
    report = _reliability_report()
    text = "\n".join(report.sections(report.load(str(tmp_path))))
    assert text.count("Not run") == 2

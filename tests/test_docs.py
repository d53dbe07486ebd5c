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

"""A deterministic sample of the rule-file fuzzer (`make fuzz` runs 10,000+):
`xenrules check`'s compiler never raises, never hangs, and every problem it
reports starts with file:line:col. Crashes it found are golden cases
(tests/golden/control-character.yaml: a NUL byte used to escape as yaml's
ReaderError traceback)."""

from hypothesis import HealthCheck, given, settings

import rulefuzz

SAMPLE = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))


def test_mutants_of_the_shipped_rule_files_never_break_check():
    verdicts = {"ok": 0, "problems": 0}
    for name, data in rulefuzz.mutants(300, seed=9):
        verdicts[rulefuzz.check_case(data, name)[0]] += 1   # raises Finding on a break
    # the mutator must make both kinds, or the oracle is not being exercised
    assert verdicts["ok"] > 10 and verdicts["problems"] > 100, verdicts


@SAMPLE
@given(rulefuzz.RULE_FILE)
def test_rules_made_over_the_schema_never_break_check(document):
    data = rulefuzz.dump(document)
    if data is not None:
        rulefuzz.check_case(data)


def test_the_oracle_catches_a_problem_without_its_place(monkeypatch):
    from xenrules import compiler
    monkeypatch.setattr(rulefuzz, "compile_files", lambda files: ([], ["no place here"]))
    try:
        rulefuzz.check_case(b"rule: x\n")
    except rulefuzz.Finding as e:
        assert "without file:line:col" in str(e)
    else:
        raise AssertionError("a placeless problem passed the oracle")
    assert compiler.compile_files   # the real compiler is untouched


def test_the_oracle_catches_a_traceback(monkeypatch):
    def boom(files):
        raise ValueError("boom")
    monkeypatch.setattr(rulefuzz, "compile_files", boom)
    try:
        rulefuzz.check_case(b"rule: x\n")
    except rulefuzz.Finding as e:
        assert "traceback" in str(e)
    else:
        raise AssertionError("a traceback passed the oracle")

"""when: conditions and match: tests, with reasons."""
from xenrules import conditions

V = {"a": "1", "b": "", "t": "vif"}.get


def check(cond):
    return conditions.check(cond, lambda n: V(n) or "")


def test_set_and_unset():
    assert check({"set": "a"})[0] and not check({"set": ["a", "b"]})[0]
    assert check({"unset": "b"})[0] and not check({"unset": "a"})[0]


def test_equals_one_of_values_and_reason_on_mismatch():
    assert check({"equals": {"t": ["tap", "vif"]}})[0]
    ok, why = check({"equals": {"t": "tap"}})
    assert not ok and why == "t is 'vif', not 'tap'"


def test_not_all_any():
    assert check({"not": {"set": "b"}})[0]
    assert check({"all": [{"set": "a"}, {"unset": "b"}]})[0]
    assert check({"any": [{"set": "b"}, {"set": "a"}]})[0]
    assert not check({"any": [{"set": "b"}, {"equals": {"t": "tap"}}]})[0]


def test_several_keys_must_all_hold():
    assert not check({"set": "a", "equals": {"t": "tap"}})[0]


def test_names_reports_every_variable_read():
    cond = {"all": [{"set": "x"}, {"not": {"equals": {"y": "{z}"}}}]}
    assert sorted(conditions.names(cond)) == ["x", "y", "z"]

"""Templates: {name} only, escapes, and clear errors."""
import pytest

from xenrules import template
from xenrules.errors import TemplateError

VALUES = {"backend": "backend/vif/1/0", "mtu": "1500", "empty": ""}


def test_expands_names():
    assert template.expand("{backend}/mtu={mtu}", VALUES.get) == "backend/vif/1/0/mtu=1500"


def test_double_braces_are_literal():
    assert template.expand("{{x}} {mtu}", VALUES.get) == "{x} 1500"


@pytest.mark.parametrize("text", ["{a.b}", "{a[0]}", "{__class__.x}", "{0}", "{}", "{a b}", "{x!r}"])
def test_anything_but_a_plain_name_is_rejected(text):
    with pytest.raises(TemplateError):
        template.parse(text)


@pytest.mark.parametrize("text,msg", [("{open", "unclosed"), ("close}", "single '}'")])
def test_unbalanced_braces_are_rejected(text, msg):
    with pytest.raises(TemplateError, match=msg):
        template.parse(text)


def test_names_lists_referenced_variables():
    assert template.names("{a}-{b}-{{c}}") == ["a", "b"]


def test_values_are_data_not_templates():
    # a value that itself contains braces is not expanded again
    assert template.expand("{x}", {"x": "{mtu}"}.get) == "{mtu}"


def test_expand_value_walks_lists_and_mappings_and_keeps_numbers():
    got = template.expand_value({"a": ["{mtu}", 7], "b": True}, VALUES.get)
    assert got == {"a": ["1500", 7], "b": True}

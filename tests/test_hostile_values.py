"""Hostile interface names: what the kernel would mangle must be refused.

Property-based (python3-hypothesis) over netinfo.valid_ifname and the template
expander. Defects this caught: a name of 8 two-byte characters (16 bytes) and a
name containing NUL were both accepted before.
"""
from hypothesis import given, strategies as st

from xenrules import netinfo, template

HOSTILE = ["", ".", "..", "../etc", "/abs", "a:b", "a b", "a\nb", "a\0b",
           "x" * 16, "é" * 8, "\udcff", "x" * 4096]


def test_table_of_hostile_ifnames_is_refused():
    for name in HOSTILE:
        assert not netinfo.valid_ifname(name), repr(name)


def test_ordinary_ifnames_are_accepted():
    for name in ("vif1.0", "xenbr0", "x" * 15, "é" * 7):
        assert netinfo.valid_ifname(name), name


@given(st.text(max_size=40))
def test_accepted_ifname_fits_ifnamsiz_and_has_no_separator(name):
    if netinfo.valid_ifname(name):
        raw = name.encode("utf-8")
        assert 0 < len(raw) < 16
        assert not set(name) & set("/: \t\n\r\v\f\0")


@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=200))
def test_text_without_braces_expands_to_itself(text):
    assert template.expand(text, lambda n: "X") == text

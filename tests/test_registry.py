"""Step and source registries: a type name finds its module by its prefix."""
import pytest

from xenrules.sources import all_source_kinds, source_class
from xenrules.steps import all_step_types, step_class


def test_step_class_finds_a_type_by_its_prefix_module():
    assert step_class("bridge.add_port").__name__ == "AddPort"
    assert step_class("log").__module__ == "xenrules.steps.hotplug"


@pytest.mark.parametrize("name", ["nosuchmodule.step", "bridge.nosuchstep", "base.x", ""])
def test_unknown_step_type_is_a_key_error(name):
    with pytest.raises(KeyError):
        step_class(name)


def test_every_step_type_lives_in_its_prefix_module():
    types = all_step_types()
    assert {"xenstore.write", "link.up", "lock.acquire", "log"} <= set(types)
    for name, cls in types.items():
        assert step_class(name) is cls


def test_unknown_source_kind_is_a_key_error():
    with pytest.raises(KeyError):
        source_class("nosuchmodule.kind")
    with pytest.raises(KeyError):
        source_class("xenstore")


def test_every_plugged_source_is_found_by_its_kind():
    for kind, cls in all_source_kinds().items():
        assert source_class(kind) is cls

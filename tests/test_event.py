"""Events: both calling conventions, key=value words as data, variable origins."""
from xenrules.event import Event

LIBXL_ENV = {"script": "/etc/xen/scripts/vif-bridge", "XENBUS_TYPE": "vif",
             "XENBUS_PATH": "backend/vif/3/1", "XENBUS_BASE_PATH": "backend",
             "netdev": "", "vif": "vif3.1"}


def test_libxl_vif_online_defines_command_device_and_ids():
    ev = Event("/etc/xen/scripts/vif-bridge", ["online", "type_if=vif"], LIBXL_ENV)
    assert (ev.script, ev.command) == ("vif-bridge", "online")
    b = {k: v for k, (v, _) in ev.builtins.items()}
    assert b["device"] == "vif" and b["type_if"] == "vif"
    assert (b["domid"], b["devid"], b["backend"]) == ("3", "1", "backend/vif/3/1")
    assert ev.builtins["type_if"][1] == "argument type_if="


def test_assignment_words_are_data_never_evaluated():
    ev = Event("vif-bridge", ["online", "bridge=$(touch /tmp/pwned)", "x=a=b", "=odd"], {})
    assert ev.params["bridge"] == "$(touch /tmp/pwned)"
    assert ev.params["x"] == "a=b"
    assert "=odd" not in ev.params and ev.command == "online"


def test_first_word_without_equals_is_the_command():
    ev = Event("block", ["mode=r", "add", "remove"], {})
    assert ev.command == "add"


def test_arguments_override_environment():
    ev = Event("vif-bridge", ["online", "bridge=xenbr1"], {"bridge": "xenbr0", "netdev": "eth1"})
    assert ev.value("bridge") == "xenbr1" and ev.origin("bridge") == "argument bridge="
    assert ev.value("netdev") == "eth1" and ev.origin("netdev") == "environment netdev"


def test_type_if_defaults_to_vif_for_vif_scripts_only():
    assert Event("vif-route", ["online"], {}).builtins["type_if"] == ("vif", "default")
    assert Event("block", ["add"], {"XENBUS_TYPE": "vbd"}).builtins["type_if"][0] == ""


def test_tap_event_derives_ids_and_backend_from_interface():
    ev = Event("vif-bridge", ["add", "type_if=tap"], {"INTERFACE": "vif12.3-emu"})
    b = {k: v for k, (v, _) in ev.builtins.items()}
    assert (b["domid"], b["devid"]) == ("12", "3")
    assert b["backend"] == "/local/domain/0/backend/vif/12/3"


def test_tap_name_of_xen_4_1_udev_is_split_like_vif_common_sh():
    # udev on Wheezy says INTERFACE=tap1.0; bash makes domid=tap1, devid=0
    ev = Event("vif-bridge", ["add", "type_if=tap"], {"INTERFACE": "tap1.0"})
    b = {k: v for k, (v, _) in ev.builtins.items()}
    assert (b["domid"], b["devid"]) == ("tap1", "0")
    assert b["backend"] == "/local/domain/0/backend/vif/tap1/0"


def test_tap_without_interface_leaves_ids_empty():
    ev = Event("vif-bridge", ["online", "type_if=tap"], {})
    assert ev.builtins["backend"] == ("", "INTERFACE not set")


def test_udev_vif_setup_dispatches_to_script_from_environment():
    ev = Event("/etc/xen/scripts/vif-setup", ["online", "type_if=vif"],
               {"script": "/etc/xen/scripts/vif-route", "XENBUS_PATH": "backend/vif/1/0"})
    assert ev.script == "vif-route"


def test_udev_vif_setup_without_script_means_vif_bridge():
    assert Event("vif-setup", ["online"], {}).script == "vif-bridge"


def test_backend_path_of_other_shape_gives_no_ids():
    ev = Event("vif-bridge", ["online"], {"XENBUS_PATH": "somewhere/else"})
    assert ev.builtins["domid"][0] == "" and ev.builtins["devid"][0] == ""

"""Registry of step types.

The table maps a step type to the module and class that implement it, so the
event path imports only the modules its rule actually uses (pyroute2 is heavy).
"""
import importlib

STEP_TYPES = {
    "xenstore.read": ("xenrules.steps.xenstore", "Read"),
    "xenstore.write": ("xenrules.steps.xenstore", "Write"),
    "xenstore.remove": ("xenrules.steps.xenstore", "Remove"),
    "link.rename": ("xenrules.steps.link", "Rename"),
    "link.prepare_port": ("xenrules.steps.link", "PreparePort"),
    "link.mtu": ("xenrules.steps.link", "Mtu"),
    "link.up": ("xenrules.steps.link", "Up"),
    "link.down": ("xenrules.steps.link", "Down"),
    "bridge.require": ("xenrules.steps.bridge", "Require"),
    "bridge.create": ("xenrules.steps.bridge", "Create"),
    "bridge.add_port": ("xenrules.steps.bridge", "AddPort"),
    "bridge.del_port": ("xenrules.steps.bridge", "DelPort"),
    "lock.acquire": ("xenrules.steps.lock", "Acquire"),
    "lock.release": ("xenrules.steps.lock", "Release"),
    "hotplug.success": ("xenrules.steps.hotplug", "Success"),
    "hotplug.error": ("xenrules.steps.hotplug", "Error"),
    "hotplug.busy": ("xenrules.steps.hotplug", "Busy"),
    "log": ("xenrules.steps.hotplug", "Log"),
}


def step_class(type_name):
    """Import and return the class implementing a step type."""
    module_name, class_name = STEP_TYPES[type_name]
    return getattr(importlib.import_module(module_name), class_name)

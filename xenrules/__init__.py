"""xenrules: YAML rules instead of bash for Xen dom0 hotplug."""

__version__ = "0.1.0"

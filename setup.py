"""Plain setuptools metadata; Debian's pybuild reads it (see debian/)."""
from setuptools import find_packages, setup

from xenrules import __version__

setup(
    name="xenrules",
    version=__version__,
    description="YAML rules instead of bash for Xen dom0 hotplug",
    license="GPL-2.0-or-later",
    packages=find_packages(include=["xenrules", "xenrules.*"]),
    python_requires=">=3.11",
    install_requires=["PyYAML", "jsonschema", "pyroute2", "pyxs"],
    entry_points={"console_scripts": ["xenrules = xenrules.cli:main"]},
)

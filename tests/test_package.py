"""The package namespace (``hstcosmicrays/__init__.py``): nothing heavy at import, and every
public submodule reachable as an attribute, imported on first access."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import hstcosmicrays


def test_the_submodule_list_is_the_packages():
    on_disk = {m.name for m in pkgutil.iter_modules(hstcosmicrays.__path__) if not m.name.startswith("_")}
    assert hstcosmicrays._SUBMODULES == on_disk
    assert hstcosmicrays._SUBMODULES <= set(dir(hstcosmicrays))


def test_submodules_are_attributes_imported_on_first_access():
    """In a fresh interpreter: ``hcr.results`` works without importing the submodule first (the
    notebooks use ``hcr.results.read_activity_csv``), and the import itself loads no submodule
    and neither pandas nor matplotlib."""
    code = """
import sys
import hstcosmicrays as hcr
loaded = sorted(m for m in sys.modules if m.startswith("hstcosmicrays.") and m != "hstcosmicrays._version")
assert loaded == [], loaded
assert "pandas" not in sys.modules and "matplotlib" not in sys.modules
assert callable(hcr.results.read_activity_csv)
assert hcr.results is sys.modules["hstcosmicrays.results"]
assert "matplotlib" not in sys.modules
assert hcr.plots.plot_rate and hcr.archive.make_archive
assert hcr.store.store_path("out", "wfc3_uvis").name == "wfc3_uvis.h5"
for name in ("nothing", "_workers"):
    try:
        getattr(hcr, name)
    except AttributeError as exc:
        assert repr(name) in str(exc)
    else:
        raise AssertionError(name)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"

"""The package namespace (``hstcosmicrays/__init__.py``): nothing heavy at import, and every
public submodule reachable as an attribute, imported on first access."""

from __future__ import annotations

import configparser
import pkgutil
import subprocess
import sys
from pathlib import Path

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


def _requirements(text: str) -> dict[str, str]:
    """``name: version`` of each ``name>=version`` (setup.cfg) or ``name==version[.*]`` line."""
    out = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, version = line.replace("==", ">=").partition(">=")
        out[name.split("[")[0].strip().lower()] = version.strip().removesuffix(".*")
    return out


def test_the_minimum_versions_file_pins_every_lower_bound():
    """.ci/minimum-versions.txt (the constraints the README says test the lower bounds) pins
    every requirement and test extra of setup.cfg at exactly its lower bound."""
    root = Path(__file__).resolve().parent.parent
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    bounds = _requirements(cfg["options"]["install_requires"] + "\n" + cfg["options.extras_require"]["test"])
    assert len(bounds) > 10 and all(bounds.values()), bounds
    assert _requirements((root / ".ci" / "minimum-versions.txt").read_text()) == bounds

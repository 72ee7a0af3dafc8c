"""hstcosmicrays: the cosmic-ray environment of HST measured from its archive of calibration darks.

The package does no work at import: the heavy modules load when first used. Its submodules are
attributes that import on first access (``import hstcosmicrays as hcr; hcr.results``).
"""

from ._version import __version__

__all__ = ["__version__", "CosmicRayPipeline", "open_results", "load_config"]

#: The public submodules, reachable as attributes of the package (imported on first access).
_SUBMODULES = frozenset({
    "archive", "cli", "config", "crreject", "frames", "intervals", "ir", "labels", "measure", "orbit",
    "pipeline", "plots", "results", "schema", "simulate", "stats", "store", "testing", "wfpc2",
})


def __getattr__(name):
    if name == "CosmicRayPipeline":
        from .pipeline import CosmicRayPipeline

        return CosmicRayPipeline
    if name == "open_results":
        from .results import open_results

        return open_results
    if name == "load_config":
        from .config import load_config

        return load_config
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # also sets it as an attribute
    raise AttributeError(f"module 'hstcosmicrays' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)

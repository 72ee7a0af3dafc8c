"""hstcosmicrays: the cosmic-ray environment of HST measured from its archive of calibration darks.

The package does no work at import: the heavy modules load when first used.
"""

from ._version import __version__

__all__ = ["__version__", "CosmicRayPipeline", "open_results", "load_config"]


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
    raise AttributeError(f"module 'hstcosmicrays' has no attribute {name!r}")

"""The simulated archive: a MAST stand-in serving the darks of :mod:`hstcosmicrays.simulate`.

``query`` lists a month's simulated datasets (HST-style rootnames, dates, exposure times; for
STIS, whose CR-SPLIT observations are one FLT of several imsets, each set of two or more
exposures is one dataset, :func:`hstcosmicrays.simulate.month_datasets`) and ``fetch`` writes
their product files in MAST's download layout
``<workdir>/mastDownload/HST/<obs_id>/<obs_id>_<suffix>.fits`` with the truth file
``<obs_id>_truth.fits`` beside them (not listed as a product). The same seed, instrument and
month give byte-identical files. :meth:`SimulatedArchive.product_bytes` returns the bytes of one
product (for a local MAST-shaped server) and :meth:`SimulatedArchive.resolve` maps a rootname back
to its instrument and month.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from ..config import InstrumentConfig
from ..intervals import Month
from .. import simulate
from .base import ArchiveError, Dataset, ProductFile

__all__ = ["SimulatedArchive"]

log = logging.getLogger(__name__)


class SimulatedArchive:
    """Simulated HST darks with known truth.

    Parameters
    ----------
    seed : int
        Seed of the whole simulated archive.
    darks_per_month : int, optional
        Frames per month (default: each instrument's ``simulation.darks_per_month``).
    shape : (int, int), optional
        Rows and columns of each simulated chip (default: full chips); for fast tests.
    """

    #: What its darks are (:data:`~hstcosmicrays.archive.base.SOURCES`).
    source = "simulated"

    def __init__(self, seed: int, darks_per_month: Optional[int] = None,
                 shape: Optional[tuple[int, int]] = None) -> None:
        self.seed = int(seed)
        self.darks_per_month = darks_per_month
        self.shape = tuple(shape) if shape is not None else None
        self._seen: dict[str, InstrumentConfig] = {}

    def __repr__(self) -> str:
        return f"SimulatedArchive(seed={self.seed}, darks_per_month={self.darks_per_month}, shape={self.shape})"

    # -- the Archive protocol -----------------------------------------------------------------

    def schedule(self, instrument: InstrumentConfig, month: Month) -> list[simulate.FrameSpec]:
        """The frame specifications of a month (see :func:`hstcosmicrays.simulate.month_schedule`)."""
        return simulate.month_schedule(
            instrument=instrument, month=month, seed=self.seed,
            darks_per_month=self.darks_per_month, shape=self.shape,
        )

    def datasets(self, instrument: InstrumentConfig, month: Month) -> list[simulate.DatasetSpec]:
        """The datasets of a month (see :func:`hstcosmicrays.simulate.month_datasets`)."""
        return simulate.month_datasets(
            instrument=instrument, month=month, seed=self.seed,
            darks_per_month=self.darks_per_month, shape=self.shape,
        )

    def query(self, instrument: InstrumentConfig, month: Month) -> list[Dataset]:
        """Datasets of ``instrument`` starting in ``month``, sorted by their start.

        ``t_min`` is the first exposure's EXPSTART and ``exptime`` the sum of the exposure times
        (of a STIS CR-SPLIT set, its TEXPTIME, as MAST gives ``t_exptime``).
        """
        self._seen[instrument.name] = instrument
        try:
            specs = self.datasets(instrument, month)
        except Exception as exc:  # a configuration problem: the month cannot be answered
            raise ArchiveError(f"simulated archive: {instrument.name} {month}: {exc}") from exc
        datasets = []
        for spec in specs:
            products = tuple(
                ProductFile(
                    filename=f"{spec.obs_id}_{suffix.lower()}.fits", suffix=suffix.upper(),
                    size=simulate.product_size(instrument=instrument, spec=spec, suffix=suffix),
                    uri=f"mast:HST/product/{spec.obs_id}_{suffix.lower()}.fits",
                )
                for suffix in instrument.products
            )
            datasets.append(Dataset(obs_id=spec.obs_id, instrument=instrument.name, t_min=spec.expstart,
                                    exptime=spec.exptime, products=products))
        return datasets

    def fetch(self, datasets: Sequence[Dataset], workdir: Path) -> dict[str, dict[str, Path]]:
        """Write every product (and the truth) of ``datasets`` under ``workdir/mastDownload/HST/``.

        Files already present with the announced size are kept (a re-run is cheap).
        """
        out: dict[str, dict[str, Path]] = {}
        for ds in datasets:
            try:
                instrument = self._instrument(ds.instrument)
                spec = self.dataset(instrument, ds.obs_id)
            except (KeyError, ValueError) as exc:
                raise ArchiveError(f"simulated archive: {exc}") from None
            d = Path(workdir) / "mastDownload" / "HST" / ds.obs_id
            paths = {p.suffix: d / p.filename for p in ds.products}
            truth = d / f"{ds.obs_id}_truth.fits"
            complete = truth.exists() and all(
                paths[p.suffix].exists() and (p.size is None or paths[p.suffix].stat().st_size == p.size)
                for p in ds.products
            )
            if not complete:
                written = simulate.write_dataset(instrument=instrument, spec=spec, out_dir=d)
                for p in ds.products:
                    if written[p.suffix].stat().st_size != (p.size or written[p.suffix].stat().st_size):
                        raise ArchiveError(f"simulated archive: {p.filename} has an unexpected size")
            out[ds.obs_id] = paths
        return out

    # -- helpers for a MAST-shaped server and for tests ----------------------------------------

    def resolve(self, obs_id: str, instruments: Optional[Sequence[str]] = None) -> tuple[str, Month]:
        """Instrument key and month of a simulated rootname (ValueError if it is not one)."""
        name, month, _, _ = simulate.resolve_obs_id(obs_id, instruments)
        return name, month

    def spec(self, instrument: InstrumentConfig, obs_id: str) -> simulate.FrameSpec:
        """The :class:`~hstcosmicrays.simulate.FrameSpec` of the frame whose rootname is ``obs_id``
        (:func:`~hstcosmicrays.simulate.obs_id_for`; a frame of a STIS set is served in its set's
        dataset); KeyError if there is no such frame in the archive."""
        name, month = self.resolve(obs_id, [instrument.name])
        if name != instrument.name:
            raise KeyError(f"{obs_id} is a {name} rootname, not {instrument.name}")
        for spec in self.schedule(instrument, month):
            if spec.obs_id == obs_id.lower():
                return spec
        raise KeyError(f"{obs_id} is not a frame of the simulated archive (seed {self.seed})")

    def dataset(self, instrument: InstrumentConfig, obs_id: str) -> simulate.DatasetSpec:
        """The :class:`~hstcosmicrays.simulate.DatasetSpec` of the dataset ``obs_id`` (KeyError if
        the archive has no such dataset: e.g. a frame of a STIS set, which is served in the set's
        dataset, whose obs_id the message names)."""
        name, month = self.resolve(obs_id, [instrument.name])
        if name != instrument.name:
            raise KeyError(f"{obs_id} is a {name} rootname, not {instrument.name}")
        want = obs_id.lower()
        for ds in self.datasets(instrument, month):
            if ds.obs_id == want:
                return ds
            if ds.is_set and any(f.obs_id == want for f in ds.frames):
                raise KeyError(f"{obs_id} is an exposure of the dataset {ds.obs_id} (one file of "
                               f"{len(ds.frames)} imsets), not a dataset of its own")
        raise KeyError(f"{obs_id} is not in the simulated archive (seed {self.seed})")

    def product_bytes(self, instrument: InstrumentConfig, obs_id: str, suffix: str) -> bytes:
        """Bytes of one product file of dataset ``obs_id`` (``suffix`` FLT, SPT, IMA, C0M, C1M,
        SHM or TRUTH).

        Deterministic: equal to the file :meth:`fetch` writes.
        """
        spec = self.dataset(instrument, obs_id)
        suffix = suffix.upper()
        if suffix == "TRUTH":
            return simulate.render_dataset(instrument=instrument, spec=spec, suffixes=[], truth=True)["TRUTH"]
        if suffix not in {s.upper() for s in instrument.products}:
            raise KeyError(f"{instrument.name} has no {suffix} product")
        return simulate.render_dataset(instrument=instrument, spec=spec, suffixes=[suffix], truth=False)[suffix]

    # ------------------------------------------------------------------------------------------

    def _instrument(self, name: str) -> InstrumentConfig:
        """The configuration of an instrument seen by :meth:`query` (else the packaged default)."""
        if name not in self._seen:
            from ..config import load_config

            self._seen[name] = load_config().instrument(name)
        return self._seen[name]

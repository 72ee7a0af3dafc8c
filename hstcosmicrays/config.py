"""Load and validate the configuration into frozen dataclasses.

The defaults ship inside the package (``config/hstcosmicrays.yaml`` in the source tree, installed
as the package data ``hstcosmicrays.config_files``). A user file given with ``--config`` overrides
any subset of keys: mappings are merged key by key, every other value replaces the default. It
may also give an optional key that the defaults leave out (a dataclass field with a default
value, e.g. the opt-in features of :class:`SimulationConfig`); the defaults' text, and so the
digest of a run without a user file, stays that of the packaged file.

Every value is checked against the type annotation of its dataclass field. A missing key, an
unknown key or a value of the wrong type raises :class:`ConfigError` with a one-line message that
names the file, the dotted key and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ._text import plural

__all__ = [
    "ConfigError",
    "CRRejectParams",
    "CRRejectRow",
    "SimulationConfig",
    "InstrumentConfig",
    "PipelineSettings",
    "Config",
    "load_config",
    "default_config_text",
    "config_digest",
    "results_settings",
    "RUN_ONLY_SETTINGS",
]

DEFAULT_CONFIG_NAME = "hstcosmicrays.yaml"

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration file is missing a key, has an unknown key, or a value of the wrong type."""


@dataclass(frozen=True)
class CRRejectParams:
    """CR-SPLIT rejection parameters (the columns of an STScI CRREJTAB row).

    Attributes
    ----------
    crsigmas : tuple of float
        Rejection threshold in sigma, one iteration per value.
    crradius : float
        Radius (pixels) around a hit within which neighbours are tested at the lower threshold.
    crthresh : float
        Fraction of the sigma used for the neighbours of a hit.
    initgues : str
        ``"minimum"`` or ``"median"``: the initial guess of the clean image.
    skysub : str
        ``"none"`` or ``"mode"``: sky subtracted from each image before comparison.
    scalense : float
        Multiplicative noise term, percent of the signal.
    badinpdq : int
        DQ bits of the inputs that exclude a pixel from the comparison.
    """

    crsigmas: tuple[float, ...]
    crradius: float
    crthresh: float
    initgues: str
    skysub: str
    scalense: float
    badinpdq: int

    def __post_init__(self) -> None:
        if self.initgues not in ("minimum", "median"):
            raise ConfigError(f"crreject.initgues: expected 'minimum' or 'median', got {self.initgues!r}")
        if self.skysub not in ("none", "mode"):
            raise ConfigError(f"crreject.skysub: expected 'none' or 'mode', got {self.skysub!r}")
        if not self.crsigmas or any(s <= 0 for s in self.crsigmas):
            raise ConfigError(f"crreject.crsigmas: expected one or more positive values, got {self.crsigmas!r}")


@dataclass(frozen=True)
class CRRejectRow:
    """One row of an instrument's CRREJTAB kept in the configuration (``crreject_rows``).

    The row applies to stacks of ``crsplit`` frames (stacks of more frames than the largest
    ``crsplit`` use the rows of the largest) whose mean exposure time is at most ``meanexp``
    seconds; among those, the one with the smallest ``meanexp`` wins, exactly as for a CRREJTAB
    file (:func:`hstcosmicrays.crreject.select_crrejtab_row`). ``meanexp`` null matches any
    exposure time. Parameters a row leaves out are those of the instrument's ``crreject``.
    """

    crsplit: int
    meanexp: Optional[float] = None
    crsigmas: Optional[tuple[float, ...]] = None
    crradius: Optional[float] = None
    crthresh: Optional[float] = None
    initgues: Optional[str] = None
    skysub: Optional[str] = None
    scalense: Optional[float] = None
    badinpdq: Optional[int] = None

    def params(self, defaults: CRRejectParams) -> CRRejectParams:
        """The row's parameters, completed from ``defaults``."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(CRRejectParams)
                 if getattr(self, f.name) is not None}
        return dataclasses.replace(defaults, **given)


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the simulated darks of one instrument (the ``simulation`` section).

    Used only by :mod:`hstcosmicrays.simulate`; their meaning and the physics they feed are
    described in that module's docstring. Units: seconds, electrons, days, micron, arcsec.

    Attributes
    ----------
    darks_per_month : int
        Frames per month (CR-SPLIT sets of ``crsplit`` frames; IR: single ramps).
    exptime : float
        EXPTIME of a CCD frame (s); IR: ignored, EXPTIME = (nsamp - 1) * sample_time.
    crsplit : int
        Frames per CR-SPLIT set (1 for IR).
    single_fraction : float
        Fraction of sets taken as a single frame (WFPC2 darks without a partner).
    nsamp, sample_time : int, float
        IR: reads per ramp including the zeroth read, and seconds between reads.
    gains : tuple of float
        CCDGAIN values (e-/DN); each set picks one at random.
    read_noise : float
        Read noise (e-) of one read (per amplifier it varies by a few percent).
    dark_current, dark_growth : float
        Dark current (e-/s/pixel) at ``active_start`` and its fractional growth per year.
    hot_fraction, hot_growth, hot_permanent, hot_rate : float
        Fraction of pixels hot at ``active_start``; fraction of pixels turning hot per year;
        fraction of those that survive anneals; smallest hot-pixel dark rate (e-/s).
    anneal_period : float
        Days between anneals (0: none).
    full_well : float
        Full well (e-); pixels above it are clipped and flagged ``dq_saturated``.
    adc_max : float
        Largest value of the analogue-to-digital converter (DN).
    dq_saturated : int
        DQ bit of a saturated pixel.
    bad_columns : int
        Bad columns per chip (DQ ``dq_bad``).
    flash_fraction, flash_level : float
        Fraction of sets that are post-flashed, and the flash level (e-).
    plate_scale : float
        Pixel scale (arcsec) of the WCS.
    mpv_per_micron : float
        Most probable CR charge deposit (e- per micron of path).
    diffusion_min, diffusion_max : float
        Charge-diffusion sigma (micron) of charge released at the front and at the back of the
        depletion layer.
    saa_pass_fraction : float
        Fraction of sets scheduled to cross the SAA contour.

    The knobs below are opt-in features, off by default; the packaged configuration leaves them
    out (a ``--config`` file may set them), so that the default simulated archive does not
    change. They make the data that only some real darks have:

    dn_frames : bool
        CCDs whose FLT files are in electrons (ACS, WFC3/UVIS): write SCI and ERR in DN instead
        (BUNIT ``COUNTS``), each pixel divided by the gain of the amplifier that read it (its
        ``ATODGN[A-D]``), as a reader must convert them back amplifier by amplifier. No effect
        on an instrument already in DN. CCDs only.
    amp_gain_factors : tuple of float
        Gain of amplifiers A, B, C, D relative to CCDGAIN (four values); empty: each within
        +-2 % of it at random.
    subarray_fraction : float
        Fraction of CR-SPLIT sets taken as subarrays (SUBARRAY = T, LTV1/LTV2 offsets, one chip).
        CCDs only.
    subarray_shape : tuple of int
        (rows, columns) of a subarray; within the instrument's ``chip_shape``.
    reed_solomon_fraction : float
        Fraction of frames with Reed-Solomon decoding errors of the on-board compression (runs
        of pixels replaced by fill, DQ 2), as in early ACS data. ACS only.
    """

    darks_per_month: int
    exptime: float
    crsplit: int
    single_fraction: float
    nsamp: int
    sample_time: float
    gains: tuple[float, ...]
    read_noise: float
    dark_current: float
    dark_growth: float
    hot_fraction: float
    hot_growth: float
    hot_permanent: float
    hot_rate: float
    anneal_period: float
    full_well: float
    adc_max: float
    dq_saturated: int
    bad_columns: int
    flash_fraction: float
    flash_level: float
    plate_scale: float
    mpv_per_micron: float
    diffusion_min: float
    diffusion_max: float
    saa_pass_fraction: float
    dn_frames: bool = False
    amp_gain_factors: tuple[float, ...] = ()
    subarray_fraction: float = 0.0
    subarray_shape: tuple[int, int] = (512, 512)
    reed_solomon_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.darks_per_month < 0 or self.crsplit < 1 or not self.gains:
            raise ConfigError("simulation: darks_per_month >= 0, crsplit >= 1 and one or more gains expected")
        if not 0.0 <= self.single_fraction <= 1.0 or not 0.0 <= self.saa_pass_fraction <= 1.0:
            raise ConfigError("simulation: single_fraction and saa_pass_fraction must be within [0, 1]")
        if not (0.0 <= self.subarray_fraction <= 1.0 and 0.0 <= self.reed_solomon_fraction <= 1.0):
            raise ConfigError("simulation: subarray_fraction and reed_solomon_fraction must be within [0, 1]")
        if self.amp_gain_factors and (len(self.amp_gain_factors) != 4 or min(self.amp_gain_factors) <= 0):
            raise ConfigError(f"simulation.amp_gain_factors: expected 4 positive values (amplifiers A-D) or [], "
                              f"got {list(self.amp_gain_factors)}")
        if min(self.subarray_shape) < 1:
            raise ConfigError(f"simulation.subarray_shape: expected 2 positive values, got {list(self.subarray_shape)}")

    @property
    def opt_in_features(self) -> tuple[str, ...]:
        """Names of the opt-in features that are on (see the class docstring)."""
        on = {"dn_frames": self.dn_frames, "amp_gain_factors": bool(self.amp_gain_factors),
              "subarray_fraction": self.subarray_fraction > 0, "reed_solomon_fraction": self.reed_solomon_fraction > 0}
        return tuple(k for k, v in on.items() if v)


@dataclass(frozen=True)
class InstrumentConfig:
    """Everything the pipeline knows about one detector.

    Attributes
    ----------
    name : str
        Canonical key, e.g. ``"wfc3_uvis"``; the results store is ``<name>.h5``.
    mast_name : str
        ``instrument_name`` in MAST, e.g. ``"WFC3/UVIS"``.
    instrume, detector : str
        Values of the INSTRUME and DETECTOR primary keywords.
    aliases : tuple of str
        Other spellings accepted on the command line (compared case-insensitively).
    rootname_prefix : str
        First letter of the instrument's rootnames (``i`` WFC3, ``j`` ACS, ``o`` STIS, ...).
    kind : str
        ``"ccd"`` (FLT, CR-SPLIT rejection), ``"ir"`` (IMA ramps) or ``"wfpc2"`` (C0M/C1M).
    products : tuple of str
        MAST ``productSubGroupDescription`` values to download.
    chips : tuple of int
        EXTVER of the science imsets; ``ccdchip`` gives the CCDCHIP of each.
    chip_shape : tuple of int
        (rows, columns) of one chip's science array.
    bunit : str
        Unit of the science arrays (``ELECTRONS``, ``DN``, ``ELECTRONS/S``, ``COUNTS/S``).
    gain_keywords, readnoise_keywords : tuple of str
        Header keywords of the gain (e-/DN) and read noise (e-), one per amplifier where the
        instrument has several; ``readnoise_default`` (e-) is used when none is present. For
        the IR detectors ``readnoise_default`` is the noise of one read, while their READNSE
        keywords give that of a correlated double sample (:func:`hstcosmicrays.ir.read_noise_per_read`).
    readout_time : float
        Detector readout time (s) added to EXPTIME + FLASHDUR for the integration time.
        For WFPC2 ``readout_time_long`` applies when EXPTIME > ``readout_long_above``.
    detector_area : float
        Area of the detector (all chips) in cm^2.
    pixel_size, depletion_thickness : float
        Pixel pitch and depletion (active) thickness in micron.
    active_start, active_stop : str
        ISO dates of the first day in service and of the first day out of service: the detector
        operated in [active_start, active_stop) (``active_stop`` None: still active).
    inactive : tuple of (str, str)
        ISO date ranges [start, stop) when the detector did not operate.
    dq_cr, dq_bad : int
        DQ bit of a rejected cosmic ray and of a bad detector pixel.
    max_cr_pixels : int
        A CR has more than 2 and fewer than this many pixels.
    min_exptime : float
        Frames with EXPTIME below this (s) are excluded.
    exptime_range : tuple of float
        Exposure-time range (s) asked of the archive.
    noise_model : str
        ``"err"`` (use the ERR arrays, ACS) or ``"readnoise"`` (read noise and gain, WFC3/STIS).
    border : int
        Width (pixels) of the reference-pixel border excluded from CR detection.
    crreject : CRRejectParams
        Default CR-rejection parameters (the values of the real CRREJTAB).
    crreject_rows : tuple of CRRejectRow
        The real CRREJTAB's rows where its parameters depend on the number of frames and their
        exposure time (STIS/CCD); a row is chosen as from the table file. Empty: ``crreject``
        applies to every stack (the table's rows are all equal).
    simulation : SimulationConfig or None
        Knobs of the simulated archive (None: the instrument cannot be simulated).
    jump_sigma : float
        IR ramps without CR flags: a jump above this many sigma of the read-noise plus Poisson
        difference is a CR hit (:mod:`hstcosmicrays.ir`); default 4.
    threshold_sigma : float
        WFPC2 frames without a CR-SPLIT partner: pixels above median + this many robust sigma
        are CR pixels (:mod:`hstcosmicrays.wfpc2`); default 5.
    imset_exposures : bool
        Each imset of a file is an exposure of its own (STIS: the sub-exposures of a CR-SPLIT
        or repeated observation are the imsets of one FLT, imset ``k`` holding EXTVER
        ``chips + (k - 1) * len(chips)`` and its own EXPTIME, EXPSTART, EXPEND); otherwise the
        imsets are the chips of one exposure. Only for ``kind: ccd``; default False.
    """

    name: str
    mast_name: str
    instrume: str
    detector: str
    aliases: tuple[str, ...]
    rootname_prefix: str
    kind: str
    products: tuple[str, ...]
    chips: tuple[int, ...]
    ccdchip: tuple[int, ...]
    chip_shape: tuple[int, int]
    bunit: str
    gain_keywords: tuple[str, ...]
    readnoise_keywords: tuple[str, ...]
    readnoise_default: float
    readout_time: float
    readout_time_long: Optional[float]
    readout_long_above: Optional[float]
    detector_area: float
    pixel_size: float
    depletion_thickness: float
    active_start: str
    active_stop: Optional[str]
    inactive: tuple[tuple[str, str], ...]
    dq_cr: int
    dq_bad: int
    max_cr_pixels: int
    min_exptime: float
    exptime_range: tuple[float, float]
    noise_model: str
    border: int
    crreject: CRRejectParams
    crreject_rows: tuple[CRRejectRow, ...] = ()
    simulation: Optional[SimulationConfig] = None
    jump_sigma: float = 4.0
    threshold_sigma: float = 5.0
    imset_exposures: bool = False

    def __post_init__(self) -> None:
        where = f"instruments.{self.name}"
        if self.imset_exposures and self.kind != "ccd":
            raise ConfigError(f"{where}.imset_exposures: only CCD FLT files (kind 'ccd') hold exposures as imsets")
        if not (self.jump_sigma > 0 and self.threshold_sigma > 0):
            raise ConfigError(f"{where}: jump_sigma and threshold_sigma must be positive")
        if self.kind not in ("ccd", "ir", "wfpc2"):
            raise ConfigError(f"{where}.kind: expected 'ccd', 'ir' or 'wfpc2', got {self.kind!r}")
        if self.noise_model not in ("err", "readnoise"):
            raise ConfigError(f"{where}.noise_model: expected 'err' or 'readnoise', got {self.noise_model!r}")
        if len(self.ccdchip) != len(self.chips):
            raise ConfigError(f"{where}.ccdchip: expected one CCDCHIP per chip ({plural(len(self.chips), 'value')})")
        if self.detector_area <= 0 or self.pixel_size <= 0:
            raise ConfigError(f"{where}: detector_area and pixel_size must be positive")
        for i, row in enumerate(self.crreject_rows):
            key = f"{where}.crreject_rows[{i}]"
            if row.crsplit < 1 or (row.meanexp is not None and not row.meanexp >= 0):
                raise ConfigError(f"{key}: expected crsplit >= 1 and meanexp >= 0 or null, "
                                  f"got {row.crsplit}, {row.meanexp}")
            try:
                row.params(self.crreject)
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        sim = self.simulation
        if sim is not None:
            if (sim.dn_frames or sim.subarray_fraction > 0) and self.kind != "ccd":
                raise ConfigError(f"{where}.simulation: dn_frames and subarray_fraction are for CCD FLT files "
                                  f"(kind 'ccd'), not {self.kind!r}")
            if sim.reed_solomon_fraction > 0 and self.instrume.upper() != "ACS":
                raise ConfigError(f"{where}.simulation.reed_solomon_fraction: Reed-Solomon artefacts (DQ 2) are "
                                  f"simulated for ACS only, not {self.instrume}")
            if sim.subarray_fraction > 0 and any(s > c for s, c in zip(sim.subarray_shape, self.chip_shape)):
                raise ConfigError(f"{where}.simulation.subarray_shape: {list(sim.subarray_shape)} does not fit "
                                  f"in a chip of {list(self.chip_shape)}")

    def integration_time(self, *, exptime: float, flashdur: float = 0.0) -> float:
        """Integration time (s) of a frame: EXPTIME + FLASHDUR + detector readout time.

        For WFPC2 the readout adds 30 s when EXPTIME <= 180 s and 60 s otherwise.
        """
        readout = self.readout_time
        if self.readout_time_long is not None and self.readout_long_above is not None:
            if exptime > self.readout_long_above:
                readout = self.readout_time_long
        return float(exptime) + float(flashdur) + readout

    @property
    def store_name(self) -> str:
        """File name of this instrument's results store."""
        return f"{self.name}.h5"


@dataclass(frozen=True)
class PipelineSettings:
    """Run-wide settings (the ``pipeline`` section)."""

    output_dir: str
    archive: str
    workers: int
    keep_downloads: bool
    simulation_seed: int
    mast_timeout: float
    download_retries: int
    download_backoff: float
    month_settle_days: int = 7

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"key 'pipeline.workers': expected 0 or more (0 = number of cores), got {self.workers}")
        if self.month_settle_days < 0:
            raise ConfigError(f"key 'pipeline.month_settle_days': expected 0 or more, got {self.month_settle_days}")


@dataclass(frozen=True)
class Config:
    """The whole validated configuration.

    Attributes
    ----------
    source : str
        The user file applied over the packaged defaults, or the defaults' name.
    text : str
        The merged configuration as JSON with sorted keys: what the results store records.
    digest : str
        The first 16 hex digits of the SHA-256 of ``text``: the ``config_hash`` of the ledger.
    """

    pipeline: PipelineSettings
    instruments: dict[str, InstrumentConfig]
    source: str = "<defaults>"
    digest: str = ""
    text: str = field(default="", repr=False)

    @property
    def instrument_names(self) -> list[str]:
        return sorted(self.instruments)

    def instrument(self, name: str) -> InstrumentConfig:
        """Find an instrument by its key or any alias, ignoring case and ``-``/``_``/``/``.

        Raises
        ------
        ConfigError
            Unknown name; the message lists the valid instruments.
        """
        wanted = _normalise(name)
        for key, inst in self.instruments.items():
            if wanted == _normalise(key) or wanted in {_normalise(a) for a in inst.aliases}:
                return inst
        raise ConfigError(
            f"unknown instrument {name!r}; valid instruments: {', '.join(self.instrument_names)}"
        )


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


# --------------------------------------------------------------------------------------------
# loading


#: Settings of the ``pipeline`` section that change how a run goes, not what it measures: two
#: configurations that differ only in these give the same results (:func:`results_settings`).
RUN_ONLY_SETTINGS = ("output_dir", "workers", "keep_downloads", "mast_timeout", "download_retries",
                     "download_backoff", "month_settle_days")


def results_settings(text: str) -> dict:
    """The settings of a configuration's text (the JSON a ``config_hash`` names) that its
    results depend on: all but :data:`RUN_ONLY_SETTINGS`."""
    data = json.loads(text)
    pipeline = data.get("pipeline")
    if isinstance(pipeline, dict):
        data["pipeline"] = {k: v for k, v in pipeline.items() if k not in RUN_ONLY_SETTINGS}
    return data


def config_digest(text: str) -> str:
    """The digest that names a configuration in the results store: the first 16 hex digits of
    the SHA-256 of its text (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_config_text() -> str:
    """Text of the packaged default configuration file."""
    return resources.files("hstcosmicrays.config_files").joinpath(DEFAULT_CONFIG_NAME).read_text()


def _read_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{source}: not valid YAML ({first})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _optional_keys(path: str) -> frozenset[str]:
    """Keys that a user file may give at ``path`` although the packaged defaults leave them out:
    the fields with a default value of the dataclass read there (e.g. the opt-in features of
    ``SimulationConfig``, ``imset_exposures`` of an instrument)."""
    parts = path.split(".")
    if parts == ["pipeline"]:
        cls: Any = PipelineSettings
    elif len(parts) == 2 and parts[0] == "instruments":
        cls = InstrumentConfig
    elif len(parts) == 3 and parts[0] == "instruments" and parts[2] == "simulation":
        cls = SimulationConfig
    else:
        return frozenset()
    return frozenset(f.name for f in dataclasses.fields(cls) if f.init and (
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING))


def _merge(base: dict, override: dict, source: str, path: str = "") -> dict:
    """Merge ``override`` into ``base`` key by key; unknown keys are an error."""
    out = dict(base)
    for key, value in override.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in base:
            # a new instrument may be added as a whole, and an optional key (a dataclass field
            # with a default) may be given where the defaults leave it out; anything else must exist
            if path == "instruments" or key in _optional_keys(path):
                out[key] = value
                continue
            raise ConfigError(f"{source}: unknown key '{dotted}'")
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = _merge(base[key], value, source, dotted)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None) -> Config:
    """Load the packaged defaults, apply the user file ``path`` (if any) and validate.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file with any subset of the default keys.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        The file is missing, is not YAML, or has a missing/unknown key or a wrong type.
    """
    default_source = f"<package>/{DEFAULT_CONFIG_NAME}"
    data = _read_yaml(default_config_text(), default_source)
    source = default_source
    user: dict = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read configuration ({exc.strerror})") from None
        except UnicodeDecodeError as exc:  # e.g. a FITS file given by mistake: the codec's text named no file
            raise ConfigError(f"{path}: cannot read configuration (not UTF-8 text: byte {exc.start} "
                              f"is {exc.object[exc.start:exc.start + 1]!r})") from None
        user = _read_yaml(text, str(path))
        data = _merge(data, user, str(path))
        source = str(path)
    text = json.dumps(data, sort_keys=True, default=str)
    digest = config_digest(text)
    for key in ("pipeline", "instruments"):
        if key not in data:
            raise ConfigError(f"{source}: missing key '{key}'")
    extra = set(data) - {"pipeline", "instruments"}
    if extra:
        raise ConfigError(f"{source}: unknown key '{sorted(extra)[0]}'")
    pipeline = _build(PipelineSettings, data["pipeline"], source, "pipeline")
    if not isinstance(data["instruments"], dict) or not data["instruments"]:
        raise ConfigError(f"{source}: key 'instruments': expected a non-empty mapping")
    instruments = {}
    for name, raw in data["instruments"].items():
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: key 'instruments.{name}': expected a mapping, got {type(raw).__name__}")
        try:
            instruments[name] = _build(InstrumentConfig, {**raw, "name": name}, source, f"instruments.{name}")
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    for message in _shadowed_crreject(user, instruments, source):
        log.warning("%s", message)
    return Config(pipeline=pipeline, instruments=instruments, source=source, digest=digest, text=text)


def _shadowed_crreject(user: dict, instruments: dict, source: str) -> list[str]:
    """One message per instrument whose ``crreject`` keys, given in the user's file, are set by
    rows of ``crreject_rows`` too: the row chosen for a stack wins, so the user's values would
    be ignored without a word. A file that gives ``crreject_rows`` itself chose its rows."""
    messages = []
    user_instruments = user.get("instruments")
    for name, raw in (user_instruments.items() if isinstance(user_instruments, dict) else ()):
        given = raw.get("crreject") if isinstance(raw, dict) else None
        inst = instruments.get(name)
        if not isinstance(given, dict) or "crreject_rows" in raw or inst is None or not inst.crreject_rows:
            continue
        rows = inst.crreject_rows
        setting = {key: sum(getattr(row, key, None) is not None for row in rows) for key in given}
        shadowed = {key: n for key, n in setting.items() if n}
        if not shadowed:
            continue
        one = len(shadowed) == 1
        keys = f"instruments.{name}.crreject." + " and .".join(shadowed)
        values = "your value" if one else "your values"
        if all(n == len(rows) for n in shadowed.values()):
            where, unused = f"in every one of its {len(rows)} rows", "not used"
        else:
            counts = ", ".join(f"{key} in {n}" for key, n in shadowed.items())
            where = f"in some of its {len(rows)} rows ({counts})"
            unused = f"not used for a stack whose row sets {'it' if one else 'them'}"
        messages.append(
            f"{source}: {keys} {'is' if one else 'are'} {unused}: instruments.{name}.crreject_rows sets "
            f"{'it' if one else 'them'} {where}, and the row chosen for a stack (by its number of frames and "
            f"mean exposure time) wins; add 'crreject_rows: []' beside crreject to use {values}")
    return messages


# --------------------------------------------------------------------------------------------
# type-checked construction of dataclasses from plain YAML values

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " or null"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {plural(len(args), 'value')}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    def fail() -> typing.NoReturn:
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise ConfigError(f"{source}: key '{key}': expected {_describe(tp)}, got {type(value).__name__} {shown}")

    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source, key)
            except ConfigError:
                # a mapping for an optional dataclass (e.g. simulation): its own message says
                # which key inside is wrong, where "expected a mapping or null" would not
                if isinstance(value, dict) and dataclasses.is_dataclass(arg) and len(args) == 2:
                    raise
        fail()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            fail()
        return tuple(_convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return _build(tp, value, source, key)
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a programming error


def _build(cls: type, raw: dict, source: str, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key '{path}': expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key '{path}.{unknown[0]}'")
    kwargs = {}
    for f in fields:
        key = f"{path}.{f.name}"
        if f.name not in raw:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(f"{source}: missing key '{key}' ({_describe(hints[f.name])})")
        kwargs[f.name] = _convert(hints[f.name], raw[f.name], source, key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None

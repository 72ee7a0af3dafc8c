"""WFPC2 darks: cosmic rays of a frame without a CR-SPLIT partner, by a robust threshold.

A WFPC2 dark comes as three products: C0M (the calibrated science data in DN, one image per
chip: PC1, WF2, WF3, WF4, 800x800 each), C1M (its data-quality flags) and SHM (the support file
with the orbit keywords, read like an SPT). :func:`hstcosmicrays.frames.read_chips` reads the
C0M and the C1M beside it; the gain (ATODGAIN, e-/DN) converts to electrons.

Frames with CR-SPLIT partners are rejected against them (:mod:`hstcosmicrays.crreject`, the
pipeline's ``crsplit`` method). A frame alone has nothing to be compared with; its cosmic rays
are the pixels that stand out of the chip's own dark level (the pipeline's ``threshold``
method), :func:`threshold_masks`:

.. math::

    m = \\mathrm{median}(s), \\qquad \\sigma = \\max\\left(1.4826\\,\\mathrm{MAD}(s),\\;
    \\sigma_\\mathrm{read}\\right), \\qquad \\mathrm{CR} \\iff s > m + k\\,\\sigma

per chip, over the chip's usable pixels (DN; :math:`\\mathrm{MAD}(s) = \\mathrm{median}|s - m|`,
so :math:`1.4826\\,\\mathrm{MAD}` is the standard deviation of Gaussian noise), with
:math:`k` the instrument's ``threshold_sigma`` (5 by default). The floor
:math:`\\sigma_\\mathrm{read}` = read noise / gain (DN) keeps the threshold above the read
noise should the MAD collapse (a chip of nearly constant values).

Excluded C1M flags
------------------
Pixels carrying any bit of :data:`EXCLUDE_DQ` are left out of the statistics and never start a
CR (the bits of the WFPC2 Data Handbook, table 3.4): 1 Reed-Solomon decoding error,
2 calibration-file defect, 4 permanent camera defect, 16 missing data (the simulator's
permanent hot pixels), 32 other bad pixel, 128 permanent charge trap, 512 unrepaired warm (hot)
pixel, 1024 repaired warm pixel, 2048 chip masked out. Kept: 8 (A/D saturation: the cores of
bright CRs saturate) and 256 (questionable pixel above a charge trap: a dark's traps remove
charge, they add none).

A flagged pixel above the threshold is part of a CR only where it touches (8-connected) an
unflagged pixel above the threshold: a CR track crossing a hot pixel stays one CR instead of
being cut in two, while flagged pixels on their own, or in clusters of flagged pixels, are never
a CR. Pixels with the configuration's ``dq_bad`` bit (4) are never CR pixels (as in every
instrument's labelling). Hot pixels that the C1M does not flag are mostly single pixels, and a
CR has more than 2 pixels (:func:`hstcosmicrays.labels.label_crs`), so they are not counted.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy import ndimage

from ._text import plural
from .config import InstrumentConfig
from .frames import Chip

__all__ = ["EXCLUDE_DQ", "robust_level", "threshold_masks"]

log = logging.getLogger(__name__)

#: C1M bits that exclude a pixel from the threshold method (see the module docstring).
EXCLUDE_DQ = 1 | 2 | 4 | 16 | 32 | 128 | 512 | 1024 | 2048

_MAD_TO_SIGMA = 1.4826
_EIGHT = np.ones((3, 3), dtype=bool)


def robust_level(*, values: np.ndarray, floor: float = 0.0) -> tuple[float, float]:
    """Median and robust standard deviation of a set of pixel values.

    .. math::

        m = \\mathrm{median}(v), \\qquad
        \\sigma = \\max(1.4826\\,\\mathrm{median}|v - m|, \\mathrm{floor})

    Parameters
    ----------
    values : ndarray
        Pixel values (any units); non-finite values are ignored.
    floor : float
        Smallest :math:`\\sigma` returned (same units).

    Returns
    -------
    median, sigma : float
        NaN, NaN when there is no finite value.
    """
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    m = float(np.median(v))
    mad = float(np.median(np.abs(v - np.float32(m))))
    return m, max(_MAD_TO_SIGMA * mad, float(floor))


def threshold_masks(
    *, chips: Sequence[Chip], instrument: InstrumentConfig, k: float | None = None,
    exclude_dq: int = EXCLUDE_DQ,
) -> list[np.ndarray]:
    """Cosmic-ray pixels of each chip of one frame by a robust threshold.

    Parameters
    ----------
    chips : sequence of Chip
        The frame's chips (:func:`hstcosmicrays.frames.read_chips`), science in DN.
    instrument : InstrumentConfig
        ``dq_bad`` is always excluded besides ``exclude_dq``; ``border`` pixels are never CRs.
    k : float, optional
        Threshold in robust standard deviations (default ``instrument.threshold_sigma``, 5).
    exclude_dq : int
        C1M bits of pixels that are neither CRs nor used for the statistics.

    Returns
    -------
    list of ndarray of bool
        One mask per chip, True where ``sci > median + k * sigma`` (see the module docstring)
        on an unflagged pixel, or on a flagged (not ``dq_bad``) pixel touching one. A chip
        without usable pixels gets an empty mask.
    """
    if k is None:
        k = instrument.threshold_sigma
    if not k > 0:
        raise ValueError(f"threshold_masks: k must be positive, got {k}")
    bits = int(exclude_dq) | int(instrument.dq_bad)
    b = max(int(instrument.border), 0)
    masks = []
    for chip in chips:
        sci = np.asarray(chip.sci, dtype=np.float32)
        usable = ((np.asarray(chip.dq) & bits) == 0) & np.isfinite(sci)
        if b:
            usable[:b, :] = usable[-b:, :] = False
            usable[:, :b] = usable[:, -b:] = False
        gain = float(np.mean(chip.gain))
        floor = float(np.mean(chip.readnoise)) / gain if gain > 0 else 0.0
        median, sigma = robust_level(values=sci[usable], floor=floor)
        if not np.isfinite(median):
            masks.append(np.zeros(sci.shape, dtype=bool))
            continue
        cut = median + k * sigma
        above = sci > np.float32(cut)
        mask = usable & above
        touching = above & ~usable & ((chip.dq & instrument.dq_bad) == 0)
        if touching.any():
            touching &= ndimage.binary_dilation(mask, structure=_EIGHT)
            mask |= touching
        log.debug(
            "chip %d: median %.3f DN, sigma %.3f DN, threshold %.3f DN, %s above",
            chip.extver, median, sigma, cut, plural(int(mask.sum()), "pixel"),
        )
        masks.append(mask)
    return masks

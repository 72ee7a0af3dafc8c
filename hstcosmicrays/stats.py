"""Per-cosmic-ray morphology and per-frame rates, vectorised over all CRs of a chip.

Definitions (Miles et al. 2021; ``docs/architecture.md``). For a CR with pixel values
:math:`p_i` in electrons, negative values set to 0, at column :math:`x_i` and row :math:`y_i`
(0-based pixel centres):

.. math::

    I_0 = \\sum_i p_i \\qquad\\text{(energy deposited, electrons)}

    I_x = \\frac{\\sum_i p_i x_i}{I_0}, \\qquad I_y = \\frac{\\sum_i p_i y_i}{I_0}
    \\qquad\\text{(centroid, pixels)}

    I_{xx} = \\frac{\\sum_i p_i (x_i - I_x)^2}{I_0}, \\quad
    I_{yy} = \\frac{\\sum_i p_i (y_i - I_y)^2}{I_0}, \\quad
    I_{xy} = \\frac{\\sum_i p_i (x_i - I_x)(y_i - I_y)}{I_0} \\qquad\\text{(pixels}^2)

    \\sigma = \\sqrt{(I_{xx} + I_{yy}) / 2} \\qquad\\text{(size in sigma, pixels)}

    \\mathrm{shape} = \\sqrt{\\frac{(I_{xx} - I_{yy})^2 + 4 I_{xy}^2}{(I_{xx} + I_{yy})^2}}
    \\qquad (0 = \\text{round}, 1 = \\text{a line})

and the size in pixels is the number of pixels :math:`n`.

Conventions for degenerate CRs (documented choices, not in the paper):

* :math:`I_{xx} + I_{yy} = 0` (all the charge in one pixel): the second-moment tensor is zero,
  i.e. isotropic, so ``shape = 0`` (round) and ``size_sigma = 0``. Every stored shape is finite.
* :math:`I_0 = 0` (every pixel value <= 0): ``energy = 0``; the centroid and moments use equal
  weights (:math:`p_i = 1`), the geometric centre and spread of the pixels, so that positions
  stay finite.
* ``shape`` is clipped to at most 1 (it can exceed 1 only by rounding, since
  :math:`I_{xy}^2 \\le I_{xx} I_{yy}`).

All sums are one ``np.bincount`` each over the CR pixels; the moments are centred in a second
pass (centroid first, then :math:`\\sum p (x - I_x)^2`), which avoids the cancellation of
:math:`\\sum p x^2 / I_0 - I_x^2` at columns of several thousand. Arithmetic is float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["CRProperties", "cr_properties", "pixel_properties", "frame_rate", "fraction_hit"]


@dataclass(frozen=True)
class CRProperties:
    """Morphology of the CRs of one chip; every attribute is an array with one value per CR,
    CR ``k`` (label ``k+1``) at index ``k``.

    Attributes
    ----------
    n_pixels : ndarray of int64
        Size in pixels.
    energy : ndarray of float64
        Energy deposited :math:`I_0` (electrons).
    x, y : ndarray of float64
        Energy-weighted centroid column and row (0-based pixels).
    ixx, iyy, ixy : ndarray of float64
        Centred second moments (pixels^2).
    size_sigma : ndarray of float64
        :math:`\\sqrt{(I_{xx}+I_{yy})/2}` (pixels).
    shape : ndarray of float64
        0 (round) .. 1 (a line).
    """

    n_pixels: np.ndarray
    energy: np.ndarray
    x: np.ndarray
    y: np.ndarray
    ixx: np.ndarray
    iyy: np.ndarray
    ixy: np.ndarray
    size_sigma: np.ndarray
    shape: np.ndarray

    def __len__(self) -> int:
        return int(self.n_pixels.shape[0])

    def as_columns(self) -> dict[str, np.ndarray]:
        """The attributes as a ``{name: array}`` mapping."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def pixel_properties(
    *, label: np.ndarray, x: np.ndarray, y: np.ndarray, value: np.ndarray, n: int,
) -> CRProperties:
    """Morphology of ``n`` CRs from the list of their pixels.

    Parameters
    ----------
    label : ndarray of int, shape (m,)
        CR label (1..n) of each pixel.
    x, y : ndarray, shape (m,)
        Column and row of each pixel (pixels, 0-based).
    value : ndarray, shape (m,)
        Pixel value in electrons; negative values are set to 0.
    n : int
        Number of CRs; every label in 1..n must occur at least once.

    Returns
    -------
    CRProperties
        See the module docstring for the formulas.
    """
    lab = np.asarray(label, dtype=np.intp) - 1
    if lab.size and (lab.min() < 0 or lab.max() >= n):
        raise ValueError(f"pixel_properties: labels must lie in 1..{n}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    p = np.maximum(np.asarray(value, dtype=np.float64), 0.0)

    n_pixels = np.bincount(lab, minlength=n)
    if np.any(n_pixels == 0):
        raise ValueError("pixel_properties: some label in 1..n has no pixel")
    energy = np.bincount(lab, weights=p, minlength=n)

    # weights: the pixel values, or 1 for a CR with no positive charge (documented convention)
    no_charge = energy <= 0.0
    if np.any(no_charge):
        w = np.where(no_charge[lab], 1.0, p)
        total = np.where(no_charge, n_pixels.astype(np.float64), energy)
    else:
        w = p
        total = energy

    # pass 1: centroid
    xc = np.bincount(lab, weights=w * x, minlength=n) / total
    yc = np.bincount(lab, weights=w * y, minlength=n) / total
    # pass 2: centred second moments
    dx = x - xc[lab]
    dy = y - yc[lab]
    wdx = w * dx
    wdy = w * dy
    ixx = np.bincount(lab, weights=wdx * dx, minlength=n) / total
    iyy = np.bincount(lab, weights=wdy * dy, minlength=n) / total
    ixy = np.bincount(lab, weights=wdx * dy, minlength=n) / total

    trace = ixx + iyy
    size_sigma = np.sqrt(trace / 2.0)
    aniso = np.sqrt((ixx - iyy) ** 2 + 4.0 * ixy**2)
    shape = np.zeros(n, dtype=np.float64)
    np.divide(aniso, trace, out=shape, where=trace > 0.0)
    np.minimum(shape, 1.0, out=shape)
    return CRProperties(
        n_pixels=n_pixels.astype(np.int64), energy=energy, x=xc, y=yc, ixx=ixx, iyy=iyy, ixy=ixy,
        size_sigma=size_sigma, shape=shape,
    )


def cr_properties(
    *, labels: np.ndarray, image: np.ndarray, gain: np.ndarray | float | None = None, n: int | None = None,
) -> CRProperties:
    """Morphology of every labelled CR of one chip.

    Parameters
    ----------
    labels : ndarray of int, shape (rows, cols)
        From :func:`hstcosmicrays.labels.label_crs`: 0 outside CRs, 1..n inside.
    image : ndarray, shape (rows, cols)
        Pixel values, in electrons unless ``gain`` is given.
    gain : ndarray or float, optional
        Electrons per unit of ``image`` (e-/DN), a scalar or an array broadcastable to the image
        (e.g. ``chip.gain``); only the CR pixels are multiplied: :math:`p_i = \\mathrm{image}_i
        \\cdot \\mathrm{gain}_i`.
    n : int, optional
        Number of CRs (default: ``labels.max()``).

    Returns
    -------
    CRProperties
        One entry per CR, in label order; ``x`` is the column and ``y`` the row.

    Notes
    -----
    The labelled pixels are gathered once with ``np.flatnonzero``; everything after that works
    on the CR pixels only.
    """
    labels = np.asarray(labels)
    image = np.asarray(image)
    if labels.shape != image.shape or labels.ndim != 2:
        raise ValueError(f"cr_properties: labels {labels.shape} and image {image.shape} must be the same 2-D shape")
    flat = labels.reshape(-1)
    idx = np.flatnonzero(flat)
    if n is None:
        n = int(flat[idx].max()) if idx.size else 0
    row, col = np.divmod(idx, labels.shape[1])
    value = np.asarray(image[row, col], dtype=np.float64)
    if gain is not None:
        g = np.asarray(gain)
        value = value * (np.broadcast_to(g, image.shape)[row, col] if g.ndim else float(g))
    return pixel_properties(label=flat[idx], x=col, y=row, value=value, n=n)


def frame_rate(*, n_cr: int, integration_time: float, detector_area: float) -> tuple[float, float]:
    """Incident CR rate of a frame and its Poisson error.

    .. math::

        R = \\frac{N}{t A}, \\qquad \\sigma_R = \\frac{\\sqrt{N}}{t A}

    Parameters
    ----------
    n_cr : int
        Number of CRs :math:`N`.
    integration_time : float
        :math:`t` (s): EXPTIME + FLASHDUR + readout time.
    detector_area : float
        :math:`A` (cm^2) of the area searched.

    Returns
    -------
    rate, rate_err : float
        CR s^-1 cm^-2.
    """
    if n_cr < 0:
        raise ValueError(f"frame_rate: n_cr must be >= 0, got {n_cr}")
    if not (integration_time > 0 and detector_area > 0):
        raise ValueError(
            f"frame_rate: integration_time ({integration_time}) and detector_area ({detector_area}) must be > 0"
        )
    norm = float(integration_time) * float(detector_area)
    return n_cr / norm, math.sqrt(n_cr) / norm


def fraction_hit(*, n_hit: int, n_pixels: int) -> float:
    """Fraction of science pixels inside a counted CR, :math:`n_{hit} / n_{pixels}` (NaN if no
    pixels)."""
    return float(n_hit) / n_pixels if n_pixels > 0 else math.nan

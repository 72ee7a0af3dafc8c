"""HST position over an exposure from the orbit keywords of the SPT/SHM primary header.

The SPT (support) file of every HST observation carries the on-board orbit model as 18 primary
header keywords (:class:`OrbitalElements`). The model is a Keplerian ellipse with secular drifts
of the mean anomaly, the argument of perigee and the ascending node, and the equation of the
centre truncated at third order in the eccentricity. It is the model of the STScI calibration
software (``calcos.orbit.HSTOrbit.getPos``, after T. Ake's ``hst_pos_mjd.pro``); this module
evaluates it vectorised over many times.

Time ``t`` is counted in seconds since 1985-01-01 00:00 (MJD 46066):

.. math::

    t = (\\mathrm{MJD} - 46066) \\cdot 86400, \\qquad \\Delta t = t - \\mathrm{EPCHTIME}

    M = \\mathrm{MEANANOM} + 2\\pi(\\mathrm{FDMEANAN}\\,\\Delta t
        + \\tfrac12 \\mathrm{SDMEANAN}\\,\\Delta t^2)

    \\nu = M + \\sin M\\,(\\mathrm{ECCENTX2} + \\mathrm{ECBDX3}\\cos^2 M
        - \\mathrm{ECBDX4D3}\\sin^2 M + \\mathrm{ESQDX5D2}\\cos M)

    r = \\mathrm{SEMILREC} / (1 + \\mathrm{ECCENTRY}\\cos\\nu)

    \\omega = 2\\pi(\\mathrm{ARGPERIG} + \\mathrm{RCARGPER}\\,\\Delta t), \\quad
    \\Omega = 2\\pi(\\mathrm{RASCASCN} + \\mathrm{RCASCNRV}\\,\\Delta t), \\quad f = \\omega + \\nu

    \\vec r = r\\,(\\cos\\Omega\\cos f - \\cos i\\sin\\Omega\\sin f,\\;
                 \\sin\\Omega\\cos f + \\cos i\\cos\\Omega\\sin f,\\;
                 \\sin i\\sin f)

in the inertial (equatorial, equinox of date) frame, metres (converted here to km). MEANANOM is
in radians; ARGPERIG and RASCASCN in revolutions, their rates in revolutions per second.

Geocentric latitude is the declination of :math:`\\vec r`; east longitude is the right
ascension minus the Greenwich mean sidereal time (IAU 1982 expression, UT1 taken equal to UTC:
an error below 1 s of time, i.e. < 0.004 deg), wrapped to (-180, 180]; altitude is
:math:`|\\vec r| - 6378.137` km (the equatorial radius of WGS-84).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = [
    "ORBIT_KEYWORDS",
    "EARTH_RADIUS_KM",
    "OrbitalElements",
    "position_vectors",
    "hst_positions",
    "gmst_deg",
    "sample_times",
    "realistic_elements",
    "circular_mean_deg",
]

#: Equatorial radius of the Earth (km, WGS-84), subtracted from |r| for the altitude.
EARTH_RADIUS_KM = 6378.137
#: Earth's gravitational parameter GM (m^3 s^-2).
GM_EARTH = 3.986004418e14
#: Second zonal harmonic of the Earth's gravity field.
J2_EARTH = 1.08262668e-3
#: MJD of 1985-01-01 00:00, the zero of EPCHTIME.
MJD_1985 = 46066.0
SECONDS_PER_DAY = 86400.0

# keyword -> (attribute, comment); the order of the 18 SPT keywords
_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("ARGPERIG", "argument of perigee (revolutions)"),
    ("CIRVELOC", "circular orbit linear velocity (m/s)"),
    ("COSINCLI", "cosine of inclination"),
    ("ECBDX3", "eccentricity cubed times 3"),
    ("ECCENTRY", "eccentricity"),
    ("ECCENTX2", "eccentricity times 2"),
    ("ECBDX4D3", "eccentricity cubed times 4/3"),
    ("EPCHTIME", "epoch of parameters (s since 1985-01-01)"),
    ("ESQDX5D2", "eccentricity squared times 5/2"),
    ("FDMEANAN", "1st deriv of mean anomaly (revs/s)"),
    ("HSTHORB", "half the duration of the ST orbit (s)"),
    ("MEANANOM", "mean anomaly (radians)"),
    ("RASCASCN", "RA of the ascending node (revs)"),
    ("RCARGPER", "rate of argument of perigee (revs/s)"),
    ("RCASCNRV", "rate of RA of ascending node (revs/s)"),
    ("SDMEANAN", "2nd deriv of mean anomaly (revs/s/s)"),
    ("SEMILREC", "semi-latus rectum (meters)"),
    ("SINEINCL", "sine of inclination"),
)

#: The 18 orbit keywords of the SPT/SHM primary header.
ORBIT_KEYWORDS: tuple[str, ...] = tuple(k for k, _ in _KEYWORDS)


@dataclass(frozen=True)
class OrbitalElements:
    """The HST orbit model of one SPT/SHM header (the 18 orbit keywords, same units).

    Attributes
    ----------
    argperig : float
        Argument of perigee at the epoch (revolutions).
    cirveloc : float
        Circular orbit linear velocity (m/s).
    cosincli, sineincl : float
        Cosine and sine of the inclination.
    ecbdx3, eccentry, eccentx2, ecbdx4d3, esqdx5d2 : float
        3 e^3, e, 2 e, 4/3 e^3, 5/2 e^2.
    epchtime : float
        Epoch of the elements (s since 1985-01-01 00:00).
    fdmeanan : float
        First derivative of the mean anomaly (revolutions/s), i.e. 1 / period.
    hsthorb : float
        Half the orbital period (s).
    meananom : float
        Mean anomaly at the epoch (radians).
    rascascn : float
        Right ascension of the ascending node at the epoch (revolutions).
    rcargper, rcascnrv : float
        Rates of the argument of perigee and of the node (revolutions/s).
    sdmeanan : float
        Second derivative of the mean anomaly (revolutions/s^2).
    semilrec : float
        Semi-latus rectum a (1 - e^2) (m).
    """

    argperig: float
    cirveloc: float
    cosincli: float
    ecbdx3: float
    eccentry: float
    eccentx2: float
    ecbdx4d3: float
    epchtime: float
    esqdx5d2: float
    fdmeanan: float
    hsthorb: float
    meananom: float
    rascascn: float
    rcargper: float
    rcascnrv: float
    sdmeanan: float
    semilrec: float
    sineincl: float

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> "OrbitalElements":
        """Read the 18 orbit keywords from an SPT/SHM primary header (or any mapping).

        Raises
        ------
        KeyError
            A keyword is missing; the message names it.
        ValueError
            A keyword is not a finite number; the message names it.
        """
        values = {}
        for key in ORBIT_KEYWORDS:
            if key in header:
                raw = header[key]
            elif key.lower() in header:
                raw = header[key.lower()]
            else:
                raise KeyError(f"orbit keyword {key} missing from the SPT/SHM header")
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"orbit keyword {key}: expected a number, got {raw!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"orbit keyword {key}: expected a finite number, got {raw!r}")
            values[key.lower()] = value
        return cls(**values)

    def to_cards(self) -> list[tuple[str, float, str]]:
        """The 18 keywords as ``(keyword, value, comment)`` header cards, in SPT order."""
        return [(key, float(getattr(self, key.lower())), comment) for key, comment in _KEYWORDS]

    @property
    def period(self) -> float:
        """Orbital period (s), ``2 * HSTHORB``."""
        return 2.0 * self.hsthorb



def position_vectors(*, elements: OrbitalElements, mjd) -> np.ndarray:
    """Inertial position of HST (km) at the times ``mjd``.

    Parameters
    ----------
    elements : OrbitalElements
    mjd : float or array_like
        Times (MJD, UTC).

    Returns
    -------
    ndarray, shape ``mjd.shape + (3,)``
        Geocentric equatorial x, y, z (km); the formula is in the module docstring.
    """
    e = elements
    t = (np.asarray(mjd, dtype=np.float64) - MJD_1985) * SECONDS_PER_DAY
    dt = t - e.epchtime
    m = e.meananom + 2.0 * np.pi * (e.fdmeanan * dt + 0.5 * e.sdmeanan * dt * dt)
    sin_m, cos_m = np.sin(m), np.cos(m)
    nu = m + sin_m * (e.eccentx2 + e.ecbdx3 * cos_m * cos_m - e.ecbdx4d3 * sin_m * sin_m
                      + e.esqdx5d2 * cos_m)
    r = e.semilrec / (1.0 + e.eccentry * np.cos(nu))
    omega = 2.0 * np.pi * (e.argperig + e.rcargper * dt)
    node = 2.0 * np.pi * (e.rascascn + e.rcascnrv * dt)
    f = omega + nu
    sin_f, cos_f = np.sin(f), np.cos(f)
    sin_n, cos_n = np.sin(node), np.cos(node)
    xyz = np.stack(
        [
            r * (cos_n * cos_f - e.cosincli * sin_n * sin_f),
            r * (sin_n * cos_f + e.cosincli * cos_n * sin_f),
            r * e.sineincl * sin_f,
        ],
        axis=-1,
    )
    return xyz / 1000.0


def gmst_deg(mjd) -> np.ndarray:
    """Greenwich mean sidereal time (degrees, in [0, 360)) at the times ``mjd`` (UT1 ~ UTC).

    IAU 1982 expression with :math:`d = \\mathrm{JD} - 2451545.0` and :math:`T = d / 36525`:

    .. math::

        \\mathrm{GMST} = 280.46061837 + 360.98564736629\\,d + 0.000387933\\,T^2
                         - T^3 / 38710000 \\quad [\\mathrm{deg}]
    """
    d = np.asarray(mjd, dtype=np.float64) - 51544.5
    T = d / 36525.0
    # split the large linear term to keep precision: 360.98564736629 d = 360 d + 0.98564736629 d
    frac_day = d - np.floor(d)
    gmst = (280.46061837 + 360.0 * frac_day + 0.98564736629 * d
            + 0.000387933 * T * T - T * T * T / 38710000.0)
    return np.mod(gmst, 360.0)


def _wrap180(deg: np.ndarray) -> np.ndarray:
    """Wrap angles (deg) to (-180, 180]."""
    w = np.mod(deg, 360.0)
    return np.where(w > 180.0, w - 360.0, w)


def hst_positions(*, elements: OrbitalElements, mjd) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geocentric latitude, east longitude and altitude of HST at the times ``mjd``.

    Parameters
    ----------
    elements : OrbitalElements
        From :meth:`OrbitalElements.from_header` of the SPT/SHM primary header.
    mjd : float or array_like
        Times (MJD, UTC).

    Returns
    -------
    lat_deg, lon_deg, alt_km : ndarray
        ``lat = asin(z / |r|)`` (deg); ``lon = atan2(y, x) - GMST`` wrapped to (-180, 180] (deg);
        ``alt = |r| - 6378.137`` (km). Same shape as ``mjd``.
    """
    mjd = np.asarray(mjd, dtype=np.float64)
    xyz = position_vectors(elements=elements, mjd=mjd)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    r = np.sqrt(x * x + y * y + z * z)
    lat = np.degrees(np.arcsin(z / r))
    ra = np.degrees(np.arctan2(y, x))
    lon = _wrap180(ra - gmst_deg(mjd))
    return lat, lon, r - EARTH_RADIUS_KM


def sample_times(*, expstart: float, expend: float, max_step: float = 60.0, min_samples: int = 5) -> np.ndarray:
    """Evenly spaced times (MJD) over [expstart, expend], both ends included.

    Parameters
    ----------
    expstart, expend : float
        Start and end of the interval (MJD), ``expend >= expstart``.
    max_step : float
        Largest spacing between samples (s).
    min_samples : int
        Fewest samples (at least 2).

    Returns
    -------
    ndarray
        ``n = max(min_samples, ceil(86400 (expend - expstart) / max_step) + 1)`` times.

    Raises
    ------
    ValueError
        ``expend < expstart``, a non-finite time, ``max_step <= 0`` or ``min_samples < 2``.
    """
    if not (math.isfinite(expstart) and math.isfinite(expend)):
        raise ValueError(f"sample_times: non-finite EXPSTART/EXPEND ({expstart}, {expend})")
    if expend < expstart:
        raise ValueError(f"sample_times: EXPEND {expend} is before EXPSTART {expstart}")
    if max_step <= 0 or min_samples < 2:
        raise ValueError("sample_times: max_step must be > 0 and min_samples >= 2")
    span = (expend - expstart) * SECONDS_PER_DAY
    n = max(int(min_samples), int(math.ceil(span / max_step - 1e-9)) + 1)
    return np.linspace(expstart, expend, n)


def circular_mean_deg(angles_deg) -> float:
    """Circular mean of angles (deg), wrapped to (-180, 180]; NaN for an empty input.

    .. math:: \\bar\\lambda = \\mathrm{atan2}(\\langle\\sin\\lambda\\rangle, \\langle\\cos\\lambda\\rangle)
    """
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    if a.size == 0:
        return float("nan")
    return float(_wrap180(np.degrees(np.arctan2(np.mean(np.sin(a)), np.mean(np.cos(a))))))


def realistic_elements(
    *, epoch_mjd: float, rng: np.random.Generator, altitude_km: float = 540.0,
    eccentricity: float = 0.0003, inclination_deg: float = 28.47,
) -> OrbitalElements:
    """A plausible HST orbit with a random phase, for simulated SPT/SHM headers.

    The semi-major axis is :math:`a = R_\\oplus + h` (``altitude_km`` plus a random +-10 km), the
    mean motion :math:`n = \\sqrt{GM/a^3}` (period ~95.5 min at 540 km), and the secular J2
    drifts (:math:`p = a(1-e^2)`)

    .. math::

        \\dot\\Omega = -\\tfrac32 n J_2 (R_\\oplus/p)^2 \\cos i \\approx -6.6^\\circ/\\mathrm{day},
        \\qquad
        \\dot\\omega = \\tfrac34 n J_2 (R_\\oplus/p)^2 (5\\cos^2 i - 1).

    The node, argument of perigee and mean anomaly at the epoch are uniform random; EPCHTIME is
    ``epoch_mjd`` minus up to 1 day (elements are uplinked ahead of the observations); SDMEANAN is
    a small positive drag term. Values are rounded to 15 significant digits so that they survive a
    FITS header card unchanged.

    Parameters
    ----------
    epoch_mjd : float
        MJD near which the elements are used.
    rng : numpy.random.Generator
    altitude_km, eccentricity, inclination_deg : float
        Mean altitude (km), eccentricity and inclination (deg).
    """
    a = (EARTH_RADIUS_KM + altitude_km + rng.uniform(-10.0, 10.0)) * 1000.0  # m
    ecc = float(eccentricity * rng.uniform(0.7, 1.3))
    inc = math.radians(inclination_deg)
    n = math.sqrt(GM_EARTH / a**3)  # rad/s
    p = a * (1.0 - ecc * ecc)
    k = n * J2_EARTH * (EARTH_RADIUS_KM * 1000.0 / p) ** 2
    node_rate = -1.5 * k * math.cos(inc)  # rad/s
    perigee_rate = 0.75 * k * (5.0 * math.cos(inc) ** 2 - 1.0)  # rad/s
    period = 2.0 * math.pi / n
    epoch = (epoch_mjd - rng.uniform(0.0, 1.0) - MJD_1985) * SECONDS_PER_DAY
    values = dict(
        argperig=float(rng.uniform(0.0, 1.0)),
        cirveloc=math.sqrt(GM_EARTH / p),
        cosincli=math.cos(inc),
        ecbdx3=3.0 * ecc**3,
        eccentry=ecc,
        eccentx2=2.0 * ecc,
        ecbdx4d3=4.0 / 3.0 * ecc**3,
        epchtime=float(round(epoch, 3)),
        esqdx5d2=2.5 * ecc**2,
        fdmeanan=1.0 / period,
        hsthorb=period / 2.0,
        meananom=float(rng.uniform(0.0, 2.0 * math.pi)),
        rascascn=float(rng.uniform(0.0, 1.0)),
        rcargper=perigee_rate / (2.0 * math.pi),
        rcascnrv=node_rate / (2.0 * math.pi),
        sdmeanan=float(rng.uniform(0.5, 3.0)) * 1e-18,
        semilrec=p,
        sineincl=math.sin(inc),
    )
    # 15 significant digits survive a FITS header card exactly, so that positions computed from
    # a written SPT equal those computed from these elements
    return OrbitalElements(**{k: float(f"{v:.15g}") for k, v in values.items()})

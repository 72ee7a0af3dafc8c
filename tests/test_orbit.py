"""Tests of hstcosmicrays.orbit against the STScI orbit model (calcos.orbit.HSTOrbit)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits
from calcos import orbit as calcos_orbit  # the reference model (a test requirement, setup.cfg)

from hstcosmicrays.orbit import (
    ORBIT_KEYWORDS,
    OrbitalElements,
    circular_mean_deg,
    gmst_deg,
    hst_positions,
    position_vectors,
    realistic_elements,
    sample_times,
)


@pytest.fixture(scope="module")
def elements() -> OrbitalElements:
    return realistic_elements(epoch_mjd=55300.0, rng=np.random.default_rng(7))


def _write_spt(path, elements: OrbitalElements) -> None:
    hdr = fits.Header()
    for key, value, comment in elements.to_cards():
        hdr[key] = (value, comment)
    fits.PrimaryHDU(header=hdr).writeto(path)


def test_keywords_are_the_18_spt_orbit_keywords(elements):
    cards = elements.to_cards()
    assert [c[0] for c in cards] == list(ORBIT_KEYWORDS)
    assert len(ORBIT_KEYWORDS) == 18
    assert [f.name.upper() for f in dataclasses.fields(OrbitalElements)] == list(ORBIT_KEYWORDS)


def test_positions_agree_with_calcos(tmp_path, elements):
    spt = tmp_path / "x_spt.fits"
    _write_spt(spt, elements)
    reference = calcos_orbit.HSTOrbit(str(spt))
    mjd = np.linspace(55300.0, 55302.0, 57)
    ours = position_vectors(elements=elements, mjd=mjd)
    theirs = np.array([reference.getPos(float(t))[0] for t in mjd])
    assert ours.shape == (57, 3)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    # the header round trip loses nothing
    assert OrbitalElements.from_header(fits.getheader(spt)) == elements


def test_from_header_names_missing_and_bad_keywords(elements):
    hdr = fits.Header([(k, v, c) for k, v, c in elements.to_cards() if k != "SEMILREC"])
    with pytest.raises(KeyError, match="SEMILREC"):
        OrbitalElements.from_header(hdr)
    cards = {k: v for k, v, _ in elements.to_cards()}
    cards["HSTHORB"] = "soon"
    with pytest.raises(ValueError, match="HSTHORB"):
        OrbitalElements.from_header(cards)


def test_altitude_latitude_and_period(elements):
    mjd = sample_times(expstart=55300.0, expend=55301.0, max_step=30.0)
    lat, lon, alt = hst_positions(elements=elements, mjd=mjd)
    assert np.all((alt > 500) & (alt < 600))
    assert np.all(np.abs(lat) <= 28.6)
    assert lat.max() > 28.0 and lat.min() < -28.0  # the track reaches the inclination
    assert np.all((lon > -180) & (lon <= 180))
    assert 94.0 < elements.period / 60.0 < 97.0
    # node precession ~ -6.6 deg/day
    assert -7.5 < elements.rcascnrv * 360.0 * 86400.0 < -5.5


def test_ground_track_shifts_west_by_earth_rotation_per_orbit(elements):
    t = sample_times(expstart=55300.0, expend=55300.5, max_step=120.0)
    period_d = elements.period / 86400.0
    _, lon0, _ = hst_positions(elements=elements, mjd=t)
    _, lon1, _ = hst_positions(elements=elements, mjd=t + period_d)
    shift = (lon1 - lon0 + 180.0) % 360.0 - 180.0
    # Earth turns 360.9856 deg per day; the node drifts -6.6 deg per day
    expected = -(360.9856 + 6.6) * period_d
    assert -25.5 < expected < -23.5
    assert abs(np.mean(shift) - expected) < 1.0
    assert np.all(np.abs(shift - expected) < 2.0)


def test_gmst_matches_known_value():
    # 2000-01-01 12:00 UT1: GMST = 280.46061837 deg by definition of the IAU 1982 expression
    assert gmst_deg(51544.5) == pytest.approx(280.46061837, abs=1e-9)
    # one sidereal day later GMST is the same
    assert gmst_deg(51544.5 + 0.99726957) == pytest.approx(280.46061837, abs=1e-3)


def test_sample_times():
    t = sample_times(expstart=55000.0, expend=55000.0 + 1000.0 / 86400.0)
    assert t[0] == 55000.0 and t[-1] == pytest.approx(55000.0 + 1000.0 / 86400.0, abs=1e-12)
    assert np.max(np.diff(t)) * 86400.0 <= 60.0 + 1e-6
    assert len(t) == 18
    short = sample_times(expstart=55000.0, expend=55000.0 + 10.0 / 86400.0)
    assert len(short) == 5
    with pytest.raises(ValueError):
        sample_times(expstart=55001.0, expend=55000.0)


def test_circular_mean():
    assert circular_mean_deg([179.0, -179.0]) == pytest.approx(180.0, abs=1e-9)
    assert circular_mean_deg([10.0, 20.0]) == pytest.approx(15.0)
    assert np.isnan(circular_mean_deg([]))


def test_realistic_elements_are_random_but_reproducible():
    a = realistic_elements(epoch_mjd=55000.0, rng=np.random.default_rng(1))
    b = realistic_elements(epoch_mjd=55000.0, rng=np.random.default_rng(1))
    c = realistic_elements(epoch_mjd=55000.0, rng=np.random.default_rng(2))
    assert a == b and a != c
    assert abs(a.epchtime / 86400.0 + 46066.0 - 55000.0) <= 1.0

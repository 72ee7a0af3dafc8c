"""Tests of stats: analytic morphology, a brute-force reference on >10,000 CRs, frame rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hstcosmicrays.labels import label_crs
from hstcosmicrays.stats import cr_properties, fraction_hit, frame_rate, pixel_properties


def one_cr(image: np.ndarray) -> dict:
    """Properties of one CR made of every pixel of ``image``."""
    labels = np.ones(image.shape, dtype=np.int32)
    props = cr_properties(labels=labels, image=image, n=1)
    assert len(props) == 1
    return {k: v[0] for k, v in props.as_columns().items()}


def test_single_pixel():
    props = pixel_properties(label=[1], x=[17], y=[5], value=[250.0], n=1)
    assert props.energy[0] == 250.0
    assert (props.x[0], props.y[0]) == (17.0, 5.0)
    assert props.ixx[0] == props.iyy[0] == props.ixy[0] == 0.0
    assert props.size_sigma[0] == 0.0
    assert props.shape[0] == 0.0  # documented convention: zero tensor counts as round
    assert props.n_pixels[0] == 1


def test_three_by_three_square():
    img = np.zeros((7, 9))
    img[2:5, 4:7] = 100.0
    labels = (img > 0).astype(np.int32)
    p = cr_properties(labels=labels, image=img)
    assert p.n_pixels[0] == 9
    assert p.energy[0] == 900.0
    assert (p.x[0], p.y[0]) == (5.0, 3.0)
    # offsets -1, 0, 1 three times each: mean of squares 2/3
    assert p.ixx[0] == pytest.approx(2 / 3, rel=1e-15)
    assert p.iyy[0] == pytest.approx(2 / 3, rel=1e-15)
    assert p.ixy[0] == 0.0
    assert p.size_sigma[0] == pytest.approx(math.sqrt(2 / 3), rel=1e-15)
    assert p.shape[0] == 0.0


def gaussian(shape, *, xc, yc, cov, amp=1000.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    d = np.stack([xx - xc, yy - yc], axis=-1)
    inv = np.linalg.inv(cov)
    q = np.einsum("...i,ij,...j->...", d, inv, d)
    return amp * np.exp(-0.5 * q)


def test_round_gaussian_blob_of_known_sigma():
    sigma = 3.0
    img = gaussian((61, 61), xc=30.0, yc=30.0, cov=np.diag([sigma**2, sigma**2]))
    r = one_cr(img)
    # a sampled Gaussian of sigma >= 1 has discrete second moments equal to sigma^2 to
    # ~exp(-2 pi^2 sigma^2); the +-10 sigma box truncates nothing measurable
    assert r["ixx"] == pytest.approx(sigma**2, rel=1e-9)
    assert r["iyy"] == pytest.approx(sigma**2, rel=1e-9)
    assert abs(r["ixy"]) < 1e-9
    assert r["size_sigma"] == pytest.approx(sigma, rel=1e-9)
    assert r["shape"] == pytest.approx(0.0, abs=1e-9)
    assert (r["x"], r["y"]) == pytest.approx((30.0, 30.0), abs=1e-12)
    assert r["energy"] == pytest.approx(img.sum(), rel=1e-12)
    assert r["energy"] == pytest.approx(1000.0 * 2 * math.pi * sigma**2, rel=1e-9)


def test_elongated_rotated_gaussian():
    s1, s2, theta = 4.0, 1.5, math.radians(30.0)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([s1**2, s2**2]) @ rot.T
    img = gaussian((81, 81), xc=40.3, yc=39.6, cov=cov)
    r = one_cr(img)
    assert (r["x"], r["y"]) == pytest.approx((40.3, 39.6), abs=1e-9)
    assert r["ixx"] == pytest.approx(cov[0, 0], rel=1e-8)
    assert r["iyy"] == pytest.approx(cov[1, 1], rel=1e-8)
    assert r["ixy"] == pytest.approx(cov[0, 1], rel=1e-8)
    assert r["shape"] == pytest.approx((s1**2 - s2**2) / (s1**2 + s2**2), rel=1e-8)
    assert r["size_sigma"] == pytest.approx(math.sqrt((s1**2 + s2**2) / 2), rel=1e-8)


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_straight_line(direction):
    k = 7
    i = np.arange(k)
    x, y = {"horizontal": (i + 3, np.full(k, 2)), "vertical": (np.full(k, 2), i + 3),
            "diagonal": (i + 3, i + 1)}[direction]
    p = pixel_properties(label=np.ones(k, int), x=x, y=y, value=np.full(k, 50.0), n=1)
    var = (k**2 - 1) / 12  # variance of k equally spaced unit steps
    assert p.energy[0] == 50.0 * k
    assert (p.x[0], p.y[0]) == (x.mean(), y.mean())
    exp = {"horizontal": (var, 0.0, 0.0), "vertical": (0.0, var, 0.0), "diagonal": (var, var, var)}[direction]
    assert (p.ixx[0], p.iyy[0], p.ixy[0]) == pytest.approx(exp, rel=1e-14, abs=1e-14)
    assert p.shape[0] == pytest.approx(1.0, rel=1e-14)
    assert p.shape[0] <= 1.0
    assert p.size_sigma[0] == pytest.approx(math.sqrt(sum(exp[:2]) / 2), rel=1e-14)


def test_negative_pixels_count_as_zero_and_no_charge_convention():
    # the negative pixel neither adds energy nor moves the centroid
    p = pixel_properties(label=[1, 1, 1], x=[0, 1, 2], y=[0, 0, 0], value=[10.0, 10.0, -30.0], n=1)
    assert p.energy[0] == 20.0 and p.x[0] == 0.5 and p.ixx[0] == 0.25 and p.n_pixels[0] == 3
    # no positive charge: energy 0, geometric centre and spread (documented convention)
    p = pixel_properties(label=[1, 1, 1, 2, 2, 2], x=[0, 1, 2, 5, 5, 5], y=[0, 0, 0, 1, 2, 3],
                         value=[-1.0, 0.0, -2.0, 1.0, 2.0, 1.0], n=2)
    assert p.energy[0] == 0.0 and p.x[0] == 1.0 and p.ixx[0] == pytest.approx(2 / 3)
    assert p.shape[0] == 1.0
    assert p.energy[1] == 4.0 and p.y[1] == 2.0 and p.iyy[1] == pytest.approx(0.5)


def brute_force(labels: np.ndarray, image: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Reference: the published definitions evaluated CR by CR, pixel by pixel, in Python."""
    ys, xs = np.nonzero(labels)
    order = np.argsort(labels[ys, xs], kind="stable")
    ys, xs = ys[order], xs[order]
    starts = np.searchsorted(labels[ys, xs], np.arange(1, n + 2))
    out = {k: np.empty(n) for k in ("energy", "x", "y", "ixx", "iyy", "ixy", "size_sigma", "shape", "n_pixels")}
    for k in range(n):
        pix = [(int(xs[j]), int(ys[j]), max(float(image[ys[j], xs[j]]), 0.0)) for j in range(starts[k], starts[k + 1])]
        i0 = sum(p for _, _, p in pix)
        ix = sum(p * x for x, _, p in pix) / i0
        iy = sum(p * y for _, y, p in pix) / i0
        ixx = sum(p * (x - ix) ** 2 for x, _, p in pix) / i0
        iyy = sum(p * (y - iy) ** 2 for _, y, p in pix) / i0
        ixy = sum(p * (x - ix) * (y - iy) for x, y, p in pix) / i0
        tr = ixx + iyy
        out["energy"][k], out["x"][k], out["y"][k] = i0, ix, iy
        out["ixx"][k], out["iyy"][k], out["ixy"][k] = ixx, iyy, ixy
        out["size_sigma"][k] = math.sqrt(tr / 2)
        out["shape"][k] = math.sqrt(((ixx - iyy) ** 2 + 4 * ixy**2) / tr**2) if tr > 0 else 0.0
        out["n_pixels"][k] = len(pix)
    return out


def random_cr_frame(*, shape, n_tracks, rng):
    """Noise plus random straight tracks and blobs, with DQ 8192 on the track pixels."""
    rows, cols = shape
    image = rng.normal(0.0, 5.0, shape)
    dq = np.zeros(shape, np.int16)
    k = 12
    x0 = rng.uniform(6, cols - 6, n_tracks)
    y0 = rng.uniform(6, rows - 6, n_tracks)
    length = np.minimum(rng.exponential(2.5, n_tracks), 8.0)
    ang = rng.uniform(0, np.pi, n_tracks)
    t = np.linspace(-0.5, 0.5, k)
    xs = np.rint(x0[:, None] + t * length[:, None] * np.cos(ang)[:, None]).astype(int)
    ys = np.rint(y0[:, None] + t * length[:, None] * np.sin(ang)[:, None]).astype(int)
    amp = rng.lognormal(6.0, 1.0, n_tracks)[:, None] * np.ones(k)
    np.add.at(image, (ys.ravel(), xs.ravel()), amp.ravel() / k)
    dq[ys.ravel(), xs.ravel()] = 8192
    # widen half of them by one pixel to the right, with low charge (some negative after noise)
    wide = rng.random(n_tracks) < 0.5
    dq[ys[wide].ravel(), xs[wide].ravel() + 1] |= 8192
    return image, dq


def test_vectorised_matches_brute_force_on_many_crs():
    rng = np.random.default_rng(2021)
    image, dq = random_cr_frame(shape=(1500, 1600), n_tracks=20000, rng=rng)
    labels, n = label_crs(dq=dq, max_pixels=1000)
    assert n > 10_000
    fast = cr_properties(labels=labels, image=image, n=n)
    ref = brute_force(labels, image, n)
    for name, want in ref.items():
        got = getattr(fast, name).astype(np.float64)
        # relative agreement; moments that vanish (e.g. Ixy of an axis-aligned CR) are compared
        # against the CR's own scale (Ixx + Iyy)
        scale = np.maximum(np.abs(want), 1e-300)
        if name in ("ixx", "iyy", "ixy"):
            scale = np.maximum(scale, ref["ixx"] + ref["iyy"])
        if name == "shape":
            scale = np.maximum(scale, 1.0)
        worst = np.max(np.abs(got - want) / scale)
        assert worst < 1e-9, f"{name}: worst relative difference {worst:.3g}"
    # the frame really exercises the interesting cases
    assert np.ptp(fast.shape) > 0.9 and fast.n_pixels.max() > 6
    assert np.any(image[labels > 0] < 0)


def test_frame_rate_and_fraction():
    rate, err = frame_rate(n_cr=400, integration_time=1000.0, detector_area=4.0)
    assert rate == 0.1 and err == pytest.approx(20 / 4000)
    assert frame_rate(n_cr=0, integration_time=10.0, detector_area=1.0) == (0.0, 0.0)
    with pytest.raises(ValueError):
        frame_rate(n_cr=1, integration_time=0.0, detector_area=1.0)
    with pytest.raises(ValueError):
        frame_rate(n_cr=-1, integration_time=1.0, detector_area=1.0)
    assert fraction_hit(n_hit=25, n_pixels=1000) == 0.025
    assert math.isnan(fraction_hit(n_hit=0, n_pixels=0))


def test_empty_and_bad_labels():
    p = cr_properties(labels=np.zeros((4, 4), np.int32), image=np.zeros((4, 4)))
    assert len(p) == 0 and p.energy.shape == (0,)
    with pytest.raises(ValueError, match="1..2"):
        pixel_properties(label=[1, 3], x=[0, 1], y=[0, 0], value=[1.0, 1.0], n=2)
    with pytest.raises(ValueError, match="no pixel"):
        pixel_properties(label=[1, 1], x=[0, 1], y=[0, 0], value=[1.0, 1.0], n=2)
    with pytest.raises(ValueError, match="same 2-D shape"):
        cr_properties(labels=np.zeros((4, 4), np.int32), image=np.zeros((4, 5)))


def test_gain_multiplies_cr_pixels_only():
    rng = np.random.default_rng(9)
    image = rng.normal(100.0, 30.0, (20, 30))
    labels = np.zeros((20, 30), np.int32)
    labels[2:5, 3:6] = 1
    labels[10, 20:27] = 2
    gain_row = np.where(np.arange(30) < 15, 2.0, 4.0)  # two amplifier halves
    gain = np.broadcast_to(gain_row, image.shape)
    with_gain = cr_properties(labels=labels, image=image, gain=gain)
    ref = cr_properties(labels=labels, image=image * gain)
    for name, want in ref.as_columns().items():
        np.testing.assert_allclose(getattr(with_gain, name), want, rtol=1e-13)
    assert with_gain.energy[0] == pytest.approx(2.0 * np.clip(image[2:5, 3:6], 0, None).sum())
    scalar = cr_properties(labels=labels, image=image, gain=3.0)
    np.testing.assert_allclose(scalar.energy, 3.0 * cr_properties(labels=labels, image=image).energy)

"""Plots: figure content (labels, number of points and bins, scales) and the CLI plot commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hstcosmicrays import open_results, plots
from hstcosmicrays.cli import main
from hstcosmicrays.results import read_activity_csv
from test_results import build_store, in_saa


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    uvis = build_store(out / "wfc3_uvis.h5", instrument="wfc3_uvis", first="2010-01", last="2011-12",
                       frames_per_month=10, crs_per_frame=30, seed=2)
    hrc = build_store(out / "acs_hrc.h5", instrument="acs_hrc", first="2004-01", last="2004-06",
                      frames_per_month=5, crs_per_frame=40, seed=3)
    return out, uvis, hrc


def _png_ok(path):
    import matplotlib.image as mpimg

    assert path.exists() and path.stat().st_size > 5000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert img[..., :3].std() > 0.05          # not a blank canvas


def test_plot_rate_points_summary_and_solar_axis(stores, tmp_path):
    out, uvis, _ = stores
    res = open_results(out / "wfc3_uvis.h5")
    solar = tmp_path / "sunspots.csv"
    months = pd.date_range("2008-01-01", "2013-12-01", freq="MS")
    pd.DataFrame({"date": months.strftime("%Y-%m-%d"), "sunspot number": np.linspace(5, 120, len(months))}) \
        .to_csv(solar, index=False)
    png = tmp_path / "rate.png"
    fig = plots.plot_rate(res, solar_csv=solar, out=png)
    _png_ok(png)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "date (UTC)" and "CR s$^{-1}$ cm$^{-2}$" in ax.get_ylabel()
    # every frame is a point
    assert len(ax.collections[0].get_offsets()) == len(uvis)
    # one summary point per month, with its error bar
    series = res.rate_series()
    line = [ln for ln in ax.get_lines() if ln.get_marker() == "o"][0]
    assert len(line.get_xdata()) == len(series) == 24
    np.testing.assert_allclose(line.get_ydata(), series["mean"])
    # the solar series on a second axis with the CSV column's name
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "sunspot number"
    assert len(fig.axes[1].get_lines()[0].get_xdata()) == len(months)
    # frames crossing the SAA fall above the cleaned range and are counted in a note
    top = ax.get_ylim()[1]
    n_above = int((uvis["rate"] > top).sum())
    assert n_above > 0
    assert any(f"{n_above} frames" in t.get_text() for t in ax.texts)


def test_plot_rate_median_of_a_single_month_is_visible(tmp_path):
    """One month: the median 'line' is one point, so it needs a marker to show."""
    build_store(tmp_path / "acs_hrc.h5", instrument="acs_hrc", first="2004-03", last="2004-03",
                frames_per_month=6, crs_per_frame=20, seed=5)
    res = open_results(tmp_path / "acs_hrc.h5")
    ax = plots.plot_rate(res).axes[0]
    (median,) = [ln for ln in ax.get_lines() if ln.get_label() == "monthly median"]
    assert len(median.get_xdata()) == 1
    assert median.get_marker() not in (None, "", " ", "None") and median.get_markersize() > 0
    np.testing.assert_allclose(median.get_ydata(), res.rate_series()["median"])


def test_plot_rate_note_counts_in_the_singular(tmp_path):
    """One month whose one SAA frame lifts its mean above the axis: '1 frame', '1 period mean'."""
    build_store(tmp_path / "acs_hrc.h5", instrument="acs_hrc", first="2004-03", last="2004-03",
                frames_per_month=6, crs_per_frame=20, seed=5)
    ax = plots.plot_rate(open_results(tmp_path / "acs_hrc.h5")).axes[0]
    assert [t.get_text() for t in ax.texts] == ["above the axis: 1 frame (SAA crossings), 1 period mean"]


def test_plot_rate_overlays_several_instruments(stores):
    out, uvis, hrc = stores
    both = [open_results(out / "wfc3_uvis.h5"), open_results(out / "acs_hrc.h5")]
    fig = plots.plot_rate(both)
    ax = fig.axes[0]
    # each instrument's frames, in order, then each one's means (points) and medians (dashed)
    assert [len(c.get_offsets()) for c in ax.collections[:2]] == [len(uvis), len(hrc)]
    means = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert [len(ln.get_xdata()) for ln in means] == [24, 6]
    np.testing.assert_allclose(means[1].get_ydata(), both[1].rate_series()["mean"])
    assert means[0].get_color() != means[1].get_color()
    assert {"wfc3_uvis monthly median", "acs_hrc monthly median"} <= {ln.get_label() for ln in ax.get_lines()}
    # the legend: one entry per instrument and one per kind of mark, outside the axes
    assert ax.get_legend() is None
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        f"wfc3_uvis ({len(uvis)} frames)", f"acs_hrc ({len(hrc)} frames)", "frames",
        "monthly mean, 3$\\sigma$-clipped", "monthly median"]
    assert ax.get_title() == "wfc3_uvis, acs_hrc: cosmic-ray rate"
    # the span covers both instruments' dates
    from matplotlib.dates import date2num

    lo, hi = ax.get_xlim()
    assert lo < date2num(plots.mjd_to_datetime(hrc["mjd"].to_numpy()).min())
    assert hi > date2num(plots.mjd_to_datetime(uvis["mjd"].to_numpy()).max())
    with pytest.raises(ValueError, match="no results"):
        plots.plot_rate([])


def test_cli_plot_rate_overlays_and_map_refuses_several_instruments(stores, tmp_path, capsys, monkeypatch):
    out, _, _ = stores
    seen = []
    plot_rate = plots.plot_rate

    def spy(results, **kwargs):
        seen.append([r.instrument for r in results])
        return plot_rate(results, **kwargs)

    monkeypatch.setattr(plots, "plot_rate", spy)
    assert main(["-q", "plot", "rate", "--instr", "wfc3uvis,acs_hrc", "--output", str(out),
                 "--out", str(tmp_path / "rate.png")]) == 0
    assert seen == [["wfc3_uvis", "acs_hrc"]]
    _png_ok(tmp_path / "rate.png")
    capsys.readouterr()
    assert main(["-q", "plot", "map", "--instr", "wfc3uvis,acs_hrc", "--output", str(out),
                 "--out", str(tmp_path / "map.png")]) == 2
    assert capsys.readouterr().err == ("hstcosmicrays plot: error: --instr wfc3uvis,acs_hrc: plot map takes one "
                                       "instrument; rate and morphology overlay several\n")
    assert not (tmp_path / "map.png").exists()


def test_plot_rate_pdf_and_bad_suffix(stores, tmp_path):
    out, _, _ = stores
    res = open_results(out / "wfc3_uvis.h5")
    fig = plots.plot_rate(res, start="2011-01-01", out=tmp_path / "rate.pdf")
    assert (tmp_path / "rate.pdf").read_bytes()[:4] == b"%PDF"
    assert len(fig.axes) == 1
    assert len(fig.axes[0].collections[0].get_offsets()) == 120
    with pytest.raises(ValueError, match="png or .pdf"):
        plots.plot_rate(res, out=tmp_path / "rate.jpg")


def test_read_activity_csv_columns_and_missing(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("Value,Date\n10,2001-01-01\n-1,2001-02-01\n30,2001-03-01\nx,2001-04-01\n")
    s = read_activity_csv(p)
    assert s.name == "Value" and s.to_list() == [10.0, 30.0]
    assert s.index[1] == pd.Timestamp("2001-03-01")
    q = tmp_path / "b.csv"
    q.write_text("when,ssn\n2001-01-15,4.5\n")
    assert read_activity_csv(q).name == "ssn"


@pytest.mark.parametrize("content, why", [(b"", "No columns to parse from file"),
                                          (b"date,value\n2012-01-01,\xf3\xff\n", "'utf-8' codec can't decode")])
def test_an_activity_file_that_is_no_csv_is_named(tmp_path, content, why):
    """An empty or binary --solar file gave pandas' message alone, naming no file."""
    path = tmp_path / "sunspots.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError) as exc:
        read_activity_csv(path)
    assert str(exc.value).startswith(f"{path}: not a CSV file of dates and values ({why}")


def test_plot_rate_map_bins_and_saa(stores, tmp_path):
    out, _, _ = stores
    res = open_results(out / "wfc3_uvis.h5")
    png = tmp_path / "map.png"
    fig = plots.plot_rate_map(res, lon_bin=10, lat_bin=5, out=png)
    _png_ok(png)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "east longitude [deg]" and ax.get_ylabel() == "geocentric latitude [deg]"
    mesh = ax.collections[0]
    assert mesh.get_array().size == 14 * 36  # matplotlib < 3.8 keeps the array flat
    assert "mean CR rate" in fig.axes[1].get_ylabel()
    rmap = res.rate_map(lon_bin=10, lat_bin=5)
    assert rmap.mean.shape == (14, 36)
    np.testing.assert_allclose(np.ma.filled(mesh.get_array(), np.nan).reshape(14, 36), rmap.mean, equal_nan=True)
    # HST stays within +-28.5 deg: the bins beyond are empty
    assert np.isnan(rmap.mean[0]).all() and np.isnan(rmap.mean[-1]).all()
    lon, lat = rmap.peak()
    assert in_saa(lon, lat)
    marker = [ln for ln in ax.get_lines() if ln.get_marker() == "o"][0]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (lon, lat)


def test_plot_morphology_overlay(stores, tmp_path):
    out, uvis, hrc = stores
    both = [open_results(out / "wfc3_uvis.h5"), open_results(out / "acs_hrc.h5")]
    png = tmp_path / "morph.png"
    fig = plots.plot_morphology(both, out=png)
    _png_ok(png)
    assert len(fig.axes) == 4
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert labels == ["size [pixels]", "size $\\sigma$ [pixels]", "shape (0 round, 1 a line)",
                      "energy deposited [e$^-$]"]
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "linear", "linear", "log"]
    assert fig.axes[0].get_yscale() == "log"
    for ax, column in zip(fig.axes, plots.MORPHOLOGY_BINS):
        steps = ax.patches
        assert len(steps) == 2                      # one histogram per instrument
        edges = plots.MORPHOLOGY_BINS[column][1]
        for step, res in zip(steps, both):
            values = step.get_data().values
            assert len(values) == len(edges) - 1
            crs = res.cosmic_rays(columns=[column])[column].to_numpy()
            inside = (crs >= edges[0]) & (crs <= edges[-1])
            assert values.sum() == pytest.approx(1.0)
            assert values.max() == pytest.approx(np.histogram(crs[inside], edges)[0].max() / inside.sum())
    steps = [step.get_label() for step in fig.axes[3].patches]
    assert steps == [f"wfc3_uvis ({len(uvis) * 30:,} CRs in range)", f"acs_hrc ({len(hrc) * 40:,} CRs in range)"]
    # one legend for the four panels, outside them
    assert all(ax.get_legend() is None for ax in fig.axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [f"wfc3_uvis ({len(uvis) * 30:,} CRs)", f"acs_hrc ({len(hrc) * 40:,} CRs)"]


def test_an_instrument_has_one_colour_in_every_plot_and_the_legend_covers_no_data(stores, tmp_path):
    """The rate and morphology overlays used different colour sequences (C3 in one, not the
    other): now each instrument has its colour of INSTRUMENT_COLOURS, in any order or company,
    and the legend with an entry per instrument sits outside the axes."""
    from matplotlib.colors import to_rgb

    out, _, _ = stores
    uvis, hrc = open_results(out / "wfc3_uvis.h5"), open_results(out / "acs_hrc.h5")
    build_store(tmp_path / "stis_ccd.h5", instrument="stis_ccd", first="2004-01", last="2004-02",
                frames_per_month=4, crs_per_frame=10, seed=4)
    build_store(tmp_path / "acs_wfc.h5", instrument="acs_wfc", first="2004-01", last="2004-02",
                frames_per_month=4, crs_per_frame=10, seed=6)
    stis, wfc = open_results(tmp_path / "stis_ccd.h5"), open_results(tmp_path / "acs_wfc.h5")
    seen = {}  # instrument -> colours it was drawn in

    def record(name, colour):
        seen.setdefault(name, set()).add(to_rgb(colour))

    overlays = ([uvis, hrc, stis, wfc], [wfc, stis, hrc, uvis], [hrc, uvis])
    for group in overlays:
        fig = plots.plot_rate(group, solar=pd.Series([10.0, 50.0], index=pd.to_datetime(["2004-01-01", "2011-12-01"])))
        ax = fig.axes[0]
        means = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
        for res, frames, mean in zip(group, ax.collections, means):
            record(res.instrument, frames.get_facecolor()[0][:3])
            record(res.instrument, mean.get_color())
        fig.draw_without_rendering()
        legend = fig.legends[0].get_window_extent()
        assert not legend.overlaps(ax.get_window_extent())
        assert len(fig.legends[0].get_texts()) == len(group) + 3 + 1      # + the solar series
        solar = to_rgb(fig.axes[1].get_lines()[0].get_color())
    for group in overlays + ([hrc],):
        fig = plots.plot_morphology(group)
        for ax in fig.axes:
            for res, step in zip(group, ax.patches):
                record(res.instrument, step.get_edgecolor())
        fig.draw_without_rendering()
        legend = fig.legends[0].get_window_extent()
        assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
        assert not legend.overlaps(fig._suptitle.get_window_extent())
    assert all(len(colours) == 1 for colours in seen.values()), seen
    drawn = [colours.pop() for colours in seen.values()]
    assert len(set(drawn)) == 4 and solar not in drawn
    assert {name: colour for name, colour in zip(seen, drawn)} == {
        name: to_rgb(plots.INSTRUMENT_COLOURS[name]) for name in seen}


def test_overlay_colours_of_unknown_and_repeated_instruments():
    colours = plots._overlay_colours(["acs_wfc", "my_camera", "acs_wfc", "wfc3_uvis"])
    assert colours[0] == plots.INSTRUMENT_COLOURS["acs_wfc"] and colours[3] == plots.INSTRUMENT_COLOURS["wfc3_uvis"]
    assert len(set(colours)) == 4 and plots.SOLAR_COLOUR not in colours


def test_plot_morphology_single_and_custom_bins(stores):
    out, _, _ = stores
    res = open_results(out / "acs_hrc.h5")
    fig = plots.plot_morphology(res, bins={"shape": np.linspace(0, 1, 11)})
    assert len(fig.axes[2].patches[0].get_data().values) == 10
    assert len(fig.axes[0].patches) == 1


@pytest.mark.parametrize("kind", ["rate", "map", "morphology"])
def test_cli_plot_writes_png(stores, tmp_path, capsys, kind):
    out, _, _ = stores
    png = tmp_path / f"{kind}.png"
    instr = "wfc3uvis,acs_hrc" if kind == "morphology" else "WFC3/UVIS"
    extra = []
    if kind == "rate":
        solar = tmp_path / "ssn.csv"
        solar.write_text("date,value\n2010-01-01,20\n2011-01-01,60\n2012-01-01,90\n")
        extra = ["--solar", str(solar)]
    assert main(["-q", "plot", kind, "--instr", instr, "--output", str(out), "--out", str(png)] + extra) == 0
    assert f"wrote {png}" in capsys.readouterr().out
    _png_ok(png)


def test_plot_morphology_tells_its_progress_over_the_instruments(stores):
    """progress(done, total) in file rows: from 0, never back, ending at the CRs of both
    stores read once (the total grows when the second store's reading starts)."""
    out, uvis, hrc = stores
    both = [open_results(out / "wfc3_uvis.h5"), open_results(out / "acs_hrc.h5")]
    calls = []
    plots.plot_morphology(both, progress=lambda done, total: calls.append((done, total)))
    n_uvis, n_hrc = len(uvis) * 30, len(hrc) * 40
    assert calls[0] == (0, n_uvis) and calls[-1] == (n_uvis + n_hrc, n_uvis + n_hrc)
    assert (n_uvis, n_uvis + n_hrc) in calls
    done = [d for d, _ in calls]
    totals = [t for _, t in calls]
    assert done == sorted(done) and totals == sorted(totals) and all(d <= t for d, t in calls)


def test_plot_morphology_of_the_crs_of_some_frames(stores):
    """The CRs of the frames of high rate (a column of exposures, attached for the where)."""
    out, _, _ = stores
    res = open_results(out / "wfc3_uvis.h5")
    cut = float(res.exposures(columns=["rate"])["rate"].median())
    chosen = res.cosmic_rays(columns=["n_pixels"], exposure_columns=["rate"], where=f"rate > {cut}")
    fig = plots.plot_morphology(res, exposure_columns=["rate"], where=f"rate > {cut}")
    edges = plots.MORPHOLOGY_BINS["n_pixels"][1]
    inside = ((chosen["n_pixels"] >= edges[0]) & (chosen["n_pixels"] <= edges[-1])).sum()
    assert 0 < inside < len(res.cosmic_rays(columns=[]))
    assert fig.axes[0].patches[0].get_label() == f"wfc3_uvis ({inside:,} CRs in range)"


def test_cli_plot_morphology_draws_a_progress_bar_on_a_terminal(stores, tmp_path, capsys, monkeypatch):
    import sys

    out, uvis, _ = stores
    args = ["plot", "morphology", "--instr", "wfc3uvis", "--output", str(out), "--out", str(tmp_path / "m.png")]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "reading CRs:   0%|" in captured.err and f"/{len(uvis) * 30 / 1e3:.2f}k [" in captured.err
    assert captured.err.endswith("\r") and captured.out == f"wrote {tmp_path / 'm.png'}\n"
    assert main(["-q"] + args) == 0
    assert capsys.readouterr().err == ""


def test_plots_given_names_instead_of_results_say_what_to_give(stores):
    out, _, _ = stores
    res = open_results(out / "wfc3_uvis.h5")
    for call, name in ((lambda: plots.plot_rate(["stis_ccd"]), "plot_rate"),
                       (lambda: plots.plot_morphology("wfc3uvis"), "plot_morphology")):
        with pytest.raises(TypeError, match=rf"^{name}: expected Results, or a sequence of them \(from "
                                            rf"hstcosmicrays.open_results\), got str"):
            call()
    with pytest.raises(TypeError, match=r"^plot_rate_map: expected a Results .*got list"):
        plots.plot_rate_map([res, res])
    with pytest.raises(ValueError, match="plot_rate: no results given"):
        plots.plot_rate([])


def test_cli_plot_default_name_and_missing_store(stores, tmp_path, capsys):
    out, _, _ = stores
    assert main(["-q", "plot", "map", "--instr", "acs_hrc", "--output", str(out)]) == 0
    _png_ok(out / "acs_hrc_map.png")
    assert main(["-q", "plot", "rate", "--instr", "stis_ccd", "--output", str(out)]) == 2
    assert "no results store" in capsys.readouterr().err


def test_cli_plot_reports_the_file_once(stores, tmp_path, capsys):
    """At the default verbosity the plot is reported by one line, not a log line as well."""
    out, _, _ = stores
    png = tmp_path / "map.png"
    assert main(["plot", "map", "--instr", "acs_hrc", "--output", str(out), "--out", str(png)]) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in (captured.out + captured.err).splitlines() if str(png) in ln]
    assert lines == [f"wrote {png}"]


@pytest.fixture
def empty_store(tmp_path):
    from hstcosmicrays.cli import setup_logging
    from hstcosmicrays.store import ResultsStore

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    with ResultsStore.open(tmp_path / "acs_wfc.h5", instrument="acs_wfc", software_version="0", config_hash="x"):
        pass
    return tmp_path


@pytest.mark.parametrize("kind, what", [("rate", "frames"), ("map", "orbit samples of frames above 0.2 CR/s/cm2"),
                                        ("morphology", "CRs")])
def test_an_empty_selection_is_a_one_line_error_and_nothing_is_written(empty_store, capsys, kind, what):
    """A store without committed months was plotted anyway (blank axes), with matplotlib's
    'Data has no positive values' warning leaking out: now one line, exit 2, no file, no warning."""
    import warnings

    png = empty_store / f"{kind}.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (matplotlib's UserWarning) fails the test
        assert main(["plot", kind, "--instr", "acs_wfc", "--output", str(empty_store), "--out", str(png)]) == 2
    assert capsys.readouterr().err == f"hstcosmicrays plot: error: acs_wfc: nothing to plot: no {what} in its store\n"
    assert not png.exists()
    with pytest.raises(ValueError, match="acs_wfc: nothing to plot: no frames in its store from 2030-01-01"):
        plots.plot_rate(open_results(empty_store / "acs_wfc.h5"), start="2030-01-01")


def test_an_empty_instrument_of_an_overlay_is_named_and_the_others_plotted(stores, empty_store, caplog):
    import warnings

    out, _, _ = stores
    full, empty = open_results(out / "acs_hrc.h5"), open_results(empty_store / "acs_wfc.h5")
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="hstcosmicrays"):
        warnings.simplefilter("error")
        fig = plots.plot_morphology([full, empty])
        plots.plot_rate([full, empty])
    assert fig.axes[0].get_yscale() == "log"
    assert [r.getMessage() for r in caplog.records] == [
        "acs_wfc: no CRs in its store; the plot shows the other instruments",
        "acs_wfc: no frames in its store; the plot shows the other instruments"]


def _colourbar_labels(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    bar = fig.axes[1]
    return ([t.get_text() for t in bar.get_yticklabels() if t.get_text()],
            [t.get_text() for t in bar.get_yticklabels(minor=True) if t.get_text()])


def test_the_rate_map_colour_bar_has_plain_decimal_labels(stores, monkeypatch):
    """A log colour bar spanning less than a decade was labelled on its minor ticks
    '1.448x10^0': labels are plain decimals, one format for the SAA's wide span and for a
    narrow one."""
    from types import SimpleNamespace

    from hstcosmicrays.results import RateMap

    out, _, _ = stores
    wide = plots.plot_rate_map(open_results(out / "wfc3_uvis.h5"))
    major, minor = _colourbar_labels(wide)
    assert len(major) >= 2 and minor == []
    assert all("times" not in t and "$" not in t for t in major), major
    assert all(float(t.replace("\N{MINUS SIGN}", "-")) > 0 for t in major)
    lon_edges, lat_edges = np.linspace(-180, 180, 37), np.linspace(-35, 35, 15)
    mean = np.full((14, 36), np.nan)
    mean[5, 10:20] = np.linspace(1.438, 1.45, 10)
    narrow = SimpleNamespace(instrument="wfc3_uvis", rate_map=lambda **kwargs: RateMap(
        lon_edges=lon_edges, lat_edges=lat_edges, mean=mean, count=np.where(np.isfinite(mean), 4, 0)))
    major, minor = _colourbar_labels(plots.plot_rate_map(narrow))
    assert minor == [] and len(major) >= 3
    assert all("times" not in t and "$" not in t for t in major), major
    values = [float(t) for t in major]
    assert len(set(major)) == len(major) and all(1.43 <= v <= 1.46 for v in values), major

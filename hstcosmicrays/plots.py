"""Plots of a results store: CR rate versus time, rate over the Earth (the SAA), CR morphology.

Every function takes :class:`~hstcosmicrays.results.Results` objects, returns the
:class:`matplotlib.figure.Figure` and, with ``out=``, saves it (the format follows the suffix:
``.png`` or ``.pdf``). matplotlib is imported inside the functions, and figures are made with
:class:`matplotlib.figure.Figure` directly rather than through ``pyplot``: no GUI backend is
touched (rendering uses Agg, so plots work without a display) and no figure is kept alive by a
global registry. In a notebook, run ``%matplotlib inline`` once, then a returned figure shows as
the cell's value.

A selection with nothing to plot (no committed month, or none in ``start``/``stop``) raises
ValueError before a figure is made or a file written; an instrument of an overlay that has
nothing is named in a warning and the others are plotted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ._text import plural
from .results import (
    PUBLISHED_CLIP_ITERS, PUBLISHED_CLIP_SIGMA, PUBLISHED_MIN_RATE, Results, mjd_to_datetime, read_activity_csv,
)

__all__ = ["plot_rate", "plot_rate_map", "plot_morphology", "MORPHOLOGY_BINS", "RATE_LABEL", "INSTRUMENT_COLOURS"]

log = logging.getLogger(__name__)

RATE_LABEL = "CR rate [CR s$^{-1}$ cm$^{-2}$]"
SOLAR_COLOUR = "C3"

#: The colour of each instrument in every overlay plot: the default colour cycle without the solar
#: series' colour, one for each of the nine instruments. Another instrument (or a second store of
#: the same one) gets a colour of the cycle that the figure does not use yet.
INSTRUMENT_COLOURS = {
    "wfc3_uvis": "C0", "acs_wfc": "C1", "stis_ccd": "C2", "acs_hrc": "C4", "wfc3_ir": "C5", "wfpc2": "C6",
    "nicmos_nic1": "C7", "nicmos_nic2": "C8", "nicmos_nic3": "C9",
}

#: Default histogram edges of the morphology plot: (column, axis label, edges, log x, log y).
MORPHOLOGY_BINS = {
    "n_pixels": ("size [pixels]", np.unique(np.round(np.geomspace(3, 10000, 60))) - 0.5, True, True),
    "size_sigma": ("size $\\sigma$ [pixels]", np.linspace(0.0, 5.0, 101), False, True),
    "shape": ("shape (0 round, 1 a line)", np.linspace(0.0, 1.0, 51), False, False),
    "energy": ("energy deposited [e$^-$]", np.geomspace(10.0, 1e7, 91), True, False),
}


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _as_results(results, caller: str, *, several: bool = True) -> list[Results]:
    """``results`` (one :class:`Results`, or several when ``several``) as a list; an
    instrument's name, a path, or anything else without the ``instrument`` of a Results is a
    TypeError saying what to give."""
    def looks_wrong(r) -> bool:
        return isinstance(r, (str, os.PathLike)) or not hasattr(r, "instrument")

    one = not several or isinstance(results, (str, os.PathLike)) or hasattr(results, "instrument")
    items = [results] if one else list(results)
    wrong = [r for r in items if looks_wrong(r)]
    if wrong:
        raise TypeError(f"{caller}: expected {'Results, or a sequence of them' if several else 'a Results'} "
                        f"(from hstcosmicrays.open_results), got {type(wrong[0]).__name__} {wrong[0]!r}; e.g. "
                        f"{caller}({'[' if several else ''}open_results('wfc3uvis'){']' if several else ''})")
    if not items:
        raise ValueError(f"{caller}: no results given")
    return items


def _check_not_empty(counts: Sequence[tuple[str, int]], what: str, *, start=None, stop=None,
                     where: str | None = None) -> None:
    """Refuse a plot of nothing: ValueError when no instrument has any of ``what`` in the
    selection (one line, before a figure is made or a file written); an instrument of an
    overlay without any is named in a warning (its legend entry counts 0)."""
    selection = "".join(part for part in (
        f" from {start}" if start is not None else "", f" to {stop}" if stop is not None else "",
        f" where {where}" if where else "") if part)
    empty = [name for name, n in counts if not n]
    if len(empty) == len(counts):
        stores = "its store" if len(counts) == 1 else "their stores"
        raise ValueError(f"{', '.join(empty)}: nothing to plot: no {what} in {stores}{selection}")
    for name in empty:
        log.warning("%s: no %s in its store%s; the plot shows the other instruments", name, what, selection)


def _plain_number(value: float) -> str:
    """A tick label in plain decimals: 0.2, 1, 1.45, 30 (never 1.448x10^0)."""
    return np.format_float_positional(float(f"{value:.6g}"), trim="-")


def _plain_ticks(colourbar, *, log: bool) -> None:
    """Plain decimal tick labels on a colour bar. A logarithmic one spanning less than a decade
    gets evenly spaced round values (matplotlib would label its minor ticks 1.448x10^0); a wider
    one the values 1, 2, 5 times a power of ten (over more than three decades the powers of ten
    alone)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, ScalarFormatter

    vmin, vmax = colourbar.norm.vmin, colourbar.norm.vmax
    if log and vmax >= 10 * vmin:
        colourbar.locator = LogLocator(subs=(1.0, 2.0, 5.0) if vmax <= 1000 * vmin else (1.0,))
        colourbar.formatter = FuncFormatter(lambda value, _pos: _plain_number(value))
    else:
        colourbar.locator = MaxNLocator(nbins=6)
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        colourbar.formatter = formatter
    colourbar.minorticks_off()


def _save(fig, out) -> None:
    if out is None:
        return
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf"):
        raise ValueError(f"out: expected a .png or .pdf file name, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    log.debug("wrote %s", out)  # the CLI prints its own "wrote" line


def plot_rate(
    results: Results | Sequence[Results], *, solar_csv: str | os.PathLike | None = None, solar=None,
    freq: str = "MS", clip_sigma: float = PUBLISHED_CLIP_SIGMA, min_rate: float = PUBLISHED_MIN_RATE,
    max_iters: int = PUBLISHED_CLIP_ITERS, stdfunc: str = "std", start=None, stop=None,
    out: str | os.PathLike | None = None, figsize=(10.0, 4.5),
):
    """CR rate versus time: every frame as a point, the cleaned period means with error bars.

    The summary is :meth:`Results.rate_series` (frames above ``min_rate``, sigma-clipped per
    period): the means with error bars (the standard error of the mean, :math:`s/\\sqrt{n}`)
    and the medians as a line with markers. The rate axis spans twice the typical upper
    quartile; frames (SAA crossings) and period means above it are counted in a note. An
    optional solar-activity series (``solar_csv``: a CSV with date and value columns, see
    :func:`~hstcosmicrays.results.read_activity_csv`; or ``solar``: a pandas Series indexed by
    date) is drawn on a second axis.

    Several instruments are overlaid on one rate axis (the rate is per unit detector area, so
    they compare), each in its colour of :data:`INSTRUMENT_COLOURS` (as in
    :func:`plot_morphology`): its frames faint, its means as points, its medians dashed. The axis
    then spans the largest of the instruments' spans, and the legend, right of the axes, has one
    entry per instrument and one per kind of mark.

    Parameters
    ----------
    results : Results or sequence of Results
        One instrument, or several to overlay.
    solar_csv, solar :
        Optional solar-activity series, as above.
    freq, clip_sigma, min_rate, max_iters, stdfunc :
        Period and cleaning of the summary, as in :meth:`Results.rate_series`.
    start, stop :
        Frame selection as in :meth:`Results.exposures`.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[0]`` is the rate axis (``collections[k]``: the frames of ``results[k]``, then
        the error-bar containers' artists); ``fig.axes[1]`` the solar axis when one is drawn. The
        legend is the axis's for one instrument, ``fig.legends[0]`` for several.
    """
    results = _as_results(results, "plot_rate")
    several = len(results) > 1
    period = _period_name(freq)
    drawn = []  # (instrument, frame dates, frame rates, rate series)
    for res in results:
        frames = res.exposures(start=start, stop=stop, columns=["mjd", "rate"])
        series = res.rate_series(freq=freq, clip_sigma=clip_sigma, min_rate=min_rate, max_iters=max_iters,
                                 stdfunc=stdfunc, start=start, stop=stop)
        drawn.append((res.instrument, mjd_to_datetime(frames["mjd"].to_numpy()),
                      frames["rate"].to_numpy(np.float64), series))
    _check_not_empty([(name, len(rate)) for name, _, rate, _ in drawn], "frames", start=start, stop=stop)
    fig = _figure(figsize)
    ax = fig.add_subplot()
    colours = _overlay_colours([name for name, *_ in drawn])
    for k, (name, dates, rate, _) in enumerate(drawn):  # every instrument's frames below the summaries
        ax.scatter(dates, rate, s=4, color=colours[k] if several else "0.6", alpha=0.3 if several else 0.6,
                   linewidths=0, label=f"{name} frames ({len(rate)})" if several else f"frames ({len(rate)})",
                   rasterized=True)
    tops = []
    for k, (name, _, _, series) in enumerate(drawn):
        if not len(series):
            continue
        prefix = f"{name} " if several else ""
        mean_colour, median_colour = (colours[k], colours[k]) if several else ("C0", "C1")
        when = mjd_to_datetime(series["mjd"].to_numpy())
        ax.errorbar(when, series["mean"].to_numpy(), yerr=series["scatter_err"].to_numpy(),
                    fmt="o", ms=3.5, color=mean_colour, ecolor=mean_colour, elinewidth=1, capsize=0,
                    label=f"{prefix}{period} mean, {clip_sigma:g}$\\sigma$-clipped")
        # markers as well as the line: a single period has no line to show
        ax.plot(when, series["median"].to_numpy(), color=median_colour, lw=1, ls="--" if several else "-",
                marker="_", ms=9, mew=1.5, label=f"{prefix}{period} median")
        # a robust span: twice the typical upper quartile, enough for every period's median
        tops.append(max(2.0 * float(np.nanmedian(series["q75"])), 1.2 * float(np.nanmax(series["median"]))))
    if tops:
        top = max(tops)
        ax.set_ylim(0.0, top)
        above = sum(int(np.sum(rate > top)) for _, _, rate, _ in drawn)
        means_above = sum(int(np.sum(series["mean"].to_numpy() > top)) for *_, series in drawn if len(series))
        if above or means_above:
            note = f"above the axis: {plural(above, 'frame')} (SAA crossings)"
            if means_above:
                note += f", {plural(means_above, 'period mean')}"
            ax.text(0.99, 0.98, note, transform=ax.transAxes, ha="right", va="top", fontsize=8, color="0.3")
    dates = np.concatenate([d.to_numpy() for _, d, _, _ in drawn])
    if len(dates):
        span = dates.max() - dates.min()
        pad = max(span * 0.02, np.timedelta64(15, "D"))
        ax.set_xlim(dates.min() - pad, dates.max() + pad)
    ax.set_xlabel("date (UTC)")
    ax.set_ylabel(RATE_LABEL)
    ax.set_title(", ".join(name for name, *_ in drawn) + ": cosmic-ray rate")
    if several:
        # one entry per instrument (its colour) and one per kind of mark, not three per instrument
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colours[k], marker="o", ms=4, ls="--", lw=1) for k in range(len(drawn))]
        labels = [f"{name} ({len(rate)} frames)" for name, _, rate, _ in drawn]
        handles += [Line2D([], [], color="0.45", marker="o", ms=2.5, ls="none", alpha=0.6),
                    Line2D([], [], color="0.2", marker="o", ms=3.5, ls="none"),
                    Line2D([], [], color="0.2", marker="_", ms=9, mew=1.5, ls="--", lw=1)]
        labels += ["frames", f"{period} mean, {clip_sigma:g}$\\sigma$-clipped", f"{period} median"]
    else:
        handles, labels = ax.get_legend_handles_labels()
    if solar_csv is not None and solar is None:
        solar = read_activity_csv(solar_csv)
    if solar is not None:
        ax2 = ax.twinx()
        name = getattr(solar, "name", None)
        label = "solar activity" if name in (None, "", "value") else str(name)
        lines = ax2.plot(solar.index, solar.to_numpy(np.float64), color=SOLAR_COLOUR, lw=1.2, label=label)
        ax2.set_ylabel(label, color=SOLAR_COLOUR)
        ax2.set_ylim(bottom=0.0)
        handles += lines
        labels += [label]
        if len(dates):
            ax2.set_xlim(ax.get_xlim())
    if several:
        _outside_legend(fig, handles, labels)
    else:
        ax.legend(handles, labels, loc="upper left", fontsize=8)
    _save(fig, out)
    return fig


def _overlay_colours(instruments: Sequence[str]) -> list[str]:
    """The colour of each instrument of an overlay, in order: :data:`INSTRUMENT_COLOURS`, else (an
    unknown instrument, or one given twice) the next colour of the cycle free in this figure."""
    cycle = [f"C{i}" for i in range(10) if f"C{i}" != SOLAR_COLOUR]
    seen = set()
    fixed = []
    for name in instruments:
        fixed.append(INSTRUMENT_COLOURS.get(name) if name not in seen else None)
        seen.add(name)
    free = [c for c in cycle if c not in fixed] or cycle
    spare = iter(free * len(instruments))
    return [colour if colour is not None else next(spare) for colour in fixed]


def _outside_legend(fig, handles, labels, *, loc: str = "outside right upper", ncols: int = 1) -> None:
    """A figure legend outside the axes (constrained layout makes room): it covers no data however
    many instruments are overlaid."""
    fig.legend(handles, labels, loc=loc, ncols=ncols, fontsize=8)


def _period_name(freq: str) -> str:
    return {"MS": "monthly", "M": "monthly", "ME": "monthly", "QS": "quarterly", "YS": "yearly",
            "AS": "yearly", "W": "weekly", "D": "daily"}.get(freq, freq)


def plot_rate_map(
    results: Results, *, lon_bin: float = 10.0, lat_bin: float = 5.0, min_rate: float = PUBLISHED_MIN_RATE,
    min_count: int = 1, log_scale: bool = True, start=None, stop=None, out: str | os.PathLike | None = None,
    figsize=(10.0, 4.0),
):
    """Mean CR rate over longitude and latitude, from the orbit samples (the SAA stands out).

    Each orbit sample carries its exposure's rate; a bin shows the mean over its samples
    (:meth:`Results.rate_map`). Bins with fewer than ``min_count`` samples are left blank; the
    colour scale is logarithmic (``log_scale``) because the SAA is tens of times the background.
    The bin of the highest mean is marked.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[0]`` holds the mesh (``collections[0]``, one value per bin), ``fig.axes[1]``
        the colour bar.
    """
    from matplotlib.colors import LogNorm, Normalize

    results = _as_results(results, "plot_rate_map", several=False)[0]
    rmap = results.rate_map(lon_bin=lon_bin, lat_bin=lat_bin, min_rate=min_rate, start=start, stop=stop)
    values = np.where(rmap.count >= min_count, rmap.mean, np.nan)
    finite = values[np.isfinite(values)]
    _check_not_empty([(results.instrument, len(finite))], f"orbit samples of frames above {min_rate:g} CR/s/cm2",
                     start=start, stop=stop)
    fig = _figure(figsize)
    ax = fig.add_subplot()
    log_norm = log_scale and finite.min() > 0
    if log_norm:
        norm = LogNorm(vmin=finite.min(), vmax=finite.max())
    else:
        norm = Normalize(vmin=finite.min(), vmax=finite.max())
    mesh = ax.pcolormesh(rmap.lon_edges, rmap.lat_edges, np.ma.masked_invalid(values), norm=norm,
                         cmap="viridis", shading="flat")
    colourbar = fig.colorbar(mesh, ax=ax, label="mean " + RATE_LABEL)
    _plain_ticks(colourbar, log=log_norm)
    lon, lat = rmap.peak(min_count=min_count)
    ax.plot([lon], [lat], marker="o", mfc="none", mec="red", ms=12, mew=1.5,
            label=f"highest bin ({lon:.0f}, {lat:.1f}) deg")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(-180, 180)
    ax.set_ylim(rmap.lat_edges[0], rmap.lat_edges[-1])
    ax.set_xticks(np.arange(-180, 181, 60))
    ax.set_xlabel("east longitude [deg]")
    ax.set_ylabel("geocentric latitude [deg]")
    ax.set_title(f"{results.instrument}: mean CR rate along the HST orbit "
                 f"({plural(int(rmap.count.sum()), 'orbit sample')})")
    _save(fig, out)
    return fig


def plot_morphology(
    results: Results | Sequence[Results], *, bins: Mapping[str, Sequence[float]] | None = None, start=None,
    stop=None, where: str | None = None, exposure_columns: Sequence[str] | None = None,
    out: str | os.PathLike | None = None, figsize=(10.0, 7.0), progress: Callable[[int, int], None] | None = None,
):
    """Distributions of CR size (pixels and sigma), shape and energy, one or several instruments.

    Each panel shows, per instrument, the fraction of its CRs in each bin (so instruments of
    different areas and exposure totals compare), accumulated over the store in pieces of ~1e6
    rows, every panel's column read in one pass (:meth:`Results.histograms`). Size in pixels and
    energy use log-spaced bins on a log axis. Values outside a panel's bins are not counted in
    it. Each instrument has its colour of :data:`INSTRUMENT_COLOURS` (as in :func:`plot_rate`);
    one legend below the panels gives it with the instrument's number of CRs inside the size
    bins (the first panel).

    Parameters
    ----------
    results : Results or sequence of Results
    bins : mapping, optional
        Column -> bin edges, overriding :data:`MORPHOLOGY_BINS`.
    start, stop, where, exposure_columns :
        CR selection as in :meth:`Results.cosmic_rays` (e.g. the CRs of frames in the SAA:
        ``exposure_columns=["rate"], where="rate > 2"``).
    progress : callable, optional
        Called as ``progress(rows_done, rows_total)`` as the CRs are read (file rows, summed
        over the instruments; the total grows by each further instrument's rows as its reading
        starts).

    Returns
    -------
    matplotlib.figure.Figure
        Four axes in the order n_pixels, size_sigma, shape, energy; each holds one step
        histogram (``patches``) per instrument. The legend is ``fig.legends[0]``.
    """
    results = _as_results(results, "plot_morphology")
    bins = dict(bins or {})
    edges = {column: np.asarray(bins.get(column, spec[1]), dtype=np.float64) for column, spec in MORPHOLOGY_BINS.items()}
    histograms = {}
    rows_before = 0   # file rows of the instruments read before
    for k, res in enumerate(results):
        rows = [0]

        def counted(done: int, total: int, *, before: int = rows_before, rows: list = rows) -> None:
            rows[0] = total
            progress(before + done, before + total)

        found = res.histograms(edges, start=start, stop=stop, where=where, exposure_columns=exposure_columns,
                               progress=None if progress is None else counted)
        histograms.update({(column, k): counts for column, (counts, _) in found.items()})
        rows_before += rows[0]
    _check_not_empty([(res.instrument, max(int(histograms[column, k].sum()) for column in MORPHOLOGY_BINS))
                      for k, res in enumerate(results)], "CRs", start=start, stop=stop, where=where)
    colours = _overlay_colours([res.instrument for res in results])
    fig = _figure(figsize)
    axes = fig.subplots(2, 2).ravel()
    handles, labels = [], []
    for ax, (column, (label, _, logx, logy)) in zip(axes, MORPHOLOGY_BINS.items()):
        for k, res in enumerate(results):
            counts = histograms[column, k]
            total = counts.sum()
            fraction = counts / total if total else counts.astype(np.float64)
            crs = f"{total:,} CR{'' if total == 1 else 's'}"
            step = ax.stairs(fraction, edges[column], color=colours[k], lw=1.3,
                             label=f"{res.instrument} ({crs} in range)")
            if ax is axes[0]:
                handles.append(step)
                labels.append(f"{res.instrument} ({crs})")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of CRs per bin")
        if logx:
            ax.set_xscale("log")
        if logy and any(histograms[column, k].any() for k in range(len(results))):  # else nothing to scale
            ax.set_yscale("log")
    _outside_legend(fig, handles, labels, loc="outside lower center", ncols=min(len(handles), 4))
    fig.suptitle("cosmic-ray morphology: " + ", ".join(r.instrument for r in results))
    _save(fig, out)
    return fig

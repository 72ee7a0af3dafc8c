"""Month windows over an instrument's life, skipping the periods it did not operate."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from astropy.time import Time

from .config import ConfigError, InstrumentConfig

__all__ = ["Month", "parse_month", "month_windows", "unended_months", "span_label", "active_time_label", "utc_today"]

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, the unit of work and of commit.

    The window is [start, stop): from 00:00 UTC on the first day to 00:00 UTC on the first day
    of the next month.
    """

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError(f"month must be 1-12, got {self.month}")

    @property
    def label(self) -> str:
        """``YYYY-MM``."""
        return f"{self.year:04d}-{self.month:02d}"

    def __str__(self) -> str:
        return self.label

    @property
    def start(self) -> _dt.date:
        return _dt.date(self.year, self.month, 1)

    @property
    def stop(self) -> _dt.date:
        return self.next().start

    def next(self) -> "Month":
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    @property
    def mjd_start(self) -> float:
        """MJD (UTC) of the window start."""
        return float(Time(self.start.isoformat(), scale="utc").mjd)

    @property
    def mjd_stop(self) -> float:
        """MJD (UTC) of the window end (exclusive)."""
        return float(Time(self.stop.isoformat(), scale="utc").mjd)

    @classmethod
    def from_date(cls, date: _dt.date) -> "Month":
        return cls(date.year, date.month)


def parse_month(text: str) -> Month:
    """Parse ``YYYY-MM``; raise ValueError with the expected form otherwise."""
    m = _MONTH_RE.match(text.strip())
    if not m:
        raise ValueError(f"expected a month as YYYY-MM, got {text!r}")
    return Month(int(m.group(1)), int(m.group(2)))


def utc_today() -> _dt.date:
    """Today's date in UTC (month windows are UTC)."""
    return _dt.datetime.now(_dt.timezone.utc).date()


def _date(text: str, key: str) -> _dt.date:
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{key}: expected a date YYYY-MM-DD, got {text!r}") from None


def month_windows(
    *, instrument: InstrumentConfig, start: Month | None = None, stop: Month | None = None,
    today: _dt.date | None = None, include_unended: bool = False, settle_days: int = 0,
) -> list[Month]:
    """Months to process for an instrument, oldest first.

    Parameters
    ----------
    instrument : InstrumentConfig
    start : Month, optional
        First month (default: the month of ``instrument.active_start``); clipped to the active range.
    stop : Month, optional
        Last month, inclusive (default: the current month, or the month of ``active_stop``).
    today : date, optional
        Override of today's date (UTC; for tests).
    include_unended : bool
        Also return the months that have not ended by ``today`` (the current month and later).
        By default they are left out: a month is committed once, so it is processed only when
        all of its darks can be in the archive.
    settle_days : int
        A month counts as ended ``settle_days`` days after its last day (the pipeline gives the
        archive that long to receive the month's last darks).

    Returns
    -------
    list of Month
        Every month that has at least one active day, i.e. that overlaps
        [active_start, active_stop) and is not entirely inside an inactive range, and (unless
        ``include_unended``) whose last day plus ``settle_days`` days is before ``today``.

    Raises
    ------
    ValueError
        If ``stop`` is before ``start``.
    """
    if start is not None and stop is not None and stop < start:
        raise ValueError(f"the last month {stop} is before the first month {start}")
    today = today or utc_today()
    first_day = _date(instrument.active_start, f"instruments.{instrument.name}.active_start")
    last_day = (
        _date(instrument.active_stop, f"instruments.{instrument.name}.active_stop")
        if instrument.active_stop else None
    )
    gaps = [
        (_date(a, f"instruments.{instrument.name}.inactive"), _date(b, f"instruments.{instrument.name}.inactive"))
        for a, b in instrument.inactive
    ]
    begin = max(start or Month.from_date(first_day), Month.from_date(first_day))
    end = stop or Month.from_date(today)
    months = []
    m = begin
    while m <= end:
        lo, hi = max(m.start, first_day), m.stop if last_day is None else min(m.stop, last_day)
        active = lo < hi and not any(g0 <= lo and hi <= g1 for g0, g1 in gaps)
        if active and (include_unended or m.stop + _dt.timedelta(days=settle_days) <= today):
            months.append(m)
        m = m.next()
    return months


def unended_months(
    *, instrument: InstrumentConfig, start: Month | None = None, stop: Month | None = None,
    today: _dt.date | None = None, settle_days: int = 0,
) -> list[Month]:
    """The active months of a window that :func:`month_windows` leaves out because they have
    not ended (``settle_days`` after their last day) by ``today``: left for a later run."""
    today = today or utc_today()
    ended = set(month_windows(instrument=instrument, start=start, stop=stop, today=today,
                              settle_days=settle_days))
    return [m for m in month_windows(instrument=instrument, start=start, stop=stop, today=today,
                                     include_unended=True) if m not in ended]


def span_label(first: Month, last: Month) -> str:
    """``YYYY-MM`` for one month, ``YYYY-MM to YYYY-MM`` for a span."""
    return first.label if first == last else f"{first} to {last}"


def active_time_label(instrument: InstrumentConfig) -> str:
    """The instrument's active time as text: ``START to STOP`` (``today`` when it is still
    active), then each inactive range (``, inactive A to B``)."""
    inactive = "".join(f", inactive {a} to {b}" for a, b in instrument.inactive)
    return f"{instrument.active_start} to {instrument.active_stop or 'today'}{inactive}"

"""Month windows."""

import datetime as dt

import pytest

from hstcosmicrays.config import load_config
from hstcosmicrays.intervals import Month, month_windows, parse_month


def test_month_basics():
    m = parse_month("2009-12")
    assert m.label == "2009-12" and m.next() == Month(2010, 1)
    assert m.mjd_stop - m.mjd_start == 31
    assert Month(2010, 1).mjd_start == 55197.0
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month("2009/12")
    with pytest.raises(ValueError):
        parse_month("2009-13")


def test_windows_skip_inactive_gap_and_respect_active_range():
    acs = load_config().instrument("acs_wfc")
    months = month_windows(instrument=acs, start=parse_month("2006-11"), stop=parse_month("2009-06"))
    assert [m.label for m in months] == ["2006-11", "2006-12", "2007-01", "2009-05", "2009-06"]
    # the default start is the first active month, the default stop the last month that has ended
    months = month_windows(instrument=acs, today=dt.date(2002, 6, 15))
    assert months[0].label == "2002-03" and months[-1].label == "2002-05"


def test_windows_leave_out_the_months_that_have_not_ended():
    acs = load_config().instrument("acs_wfc")
    june, august = parse_month("2012-06"), parse_month("2012-08")
    labels = [m.label for m in month_windows(instrument=acs, start=june, stop=august, today=dt.date(2012, 7, 31))]
    assert labels == ["2012-06"]
    labels = [m.label for m in month_windows(instrument=acs, start=june, stop=august, today=dt.date(2012, 8, 1))]
    assert labels == ["2012-06", "2012-07"]
    labels = [m.label for m in month_windows(instrument=acs, start=june, stop=august, today=dt.date(2012, 7, 31),
                                             include_unended=True)]
    assert labels == ["2012-06", "2012-07", "2012-08"]
    # with a settling time, a month counts as ended that many days after its last day
    for today, want in ((dt.date(2012, 8, 7), ["2012-06"]), (dt.date(2012, 8, 8), ["2012-06", "2012-07"])):
        labels = [m.label for m in month_windows(instrument=acs, start=june, stop=august, today=today, settle_days=7)]
        assert labels == want


def test_windows_clip_to_end_of_life():
    hrc = load_config().instrument("acs_hrc")
    months = month_windows(instrument=hrc, start=parse_month("2006-11"), stop=parse_month("2008-01"))
    assert [m.label for m in months] == ["2006-11", "2006-12", "2007-01"]
    assert month_windows(instrument=hrc, start=parse_month("2001-01"), stop=parse_month("2002-03"))[0].label == "2002-03"


def test_windows_refuse_a_stop_before_the_start():
    acs = load_config().instrument("acs_wfc")
    with pytest.raises(ValueError, match="2012-03 is before the first month 2012-05"):
        month_windows(instrument=acs, start=parse_month("2012-05"), stop=parse_month("2012-03"))
    assert [m.label for m in month_windows(instrument=acs, start=parse_month("2012-05"),
                                           stop=parse_month("2012-05"))] == ["2012-05"]

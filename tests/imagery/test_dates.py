"""Imagery capture dates: reading them, the latest, date ranges. Pure."""

from __future__ import annotations

import pytest

from amberscan.imagery import dates


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2015-06-01", "2015-06-01"),
        ("31 Dec 2012", "2012-12-31"),
        ("2014-10-11T00:00:00Z", "2014-10-11"),
        ("", ""),
        ("soon", ""),
    ],
)
def test_normalize_date(text: str, iso: str) -> None:
    assert dates.normalize_date(text) == iso


def test_dates() -> None:
    assert dates.latest_date(["2014-01-01", "", "2015-02-03"]) == "2015-02-03"
    assert dates.latest_date(["", ""]) == ""
    assert dates.date_in_range("2015-06-01", "2015-01-01", "2015-12-31")
    assert not dates.date_in_range("2015-06-01", "2016-01-01", "")
    assert not dates.date_in_range("2015-06-01", "", "2015-05-31")
    assert dates.date_in_range("", "2016-01-01", "")

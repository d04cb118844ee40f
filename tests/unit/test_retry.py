"""Retry arithmetic: the numbers that decide how politely we hammer a struggling registry."""

from __future__ import annotations

import email.utils

import pytest

from occystrap.registry.retry import RETRYABLE_STATUS, backoff_delay, parse_retry_after

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("5", 5.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("12abc", None),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Mon, 99 Foo 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    got = parse_retry_after(value, NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1.0)


def test_parse_retry_after_date_without_zone_is_gmt() -> None:
    value = email.utils.formatdate(NOW + 60, usegmt=False).rsplit(" ", 1)[0] + " -0000"
    assert parse_retry_after(value, NOW) == pytest.approx(60.0, abs=1.0)


@pytest.mark.parametrize(
    ("attempt", "retry_after", "cap", "expected"),
    [
        (0, None, 60.0, 1.0),
        (1, None, 60.0, 2.0),
        (2, None, 60.0, 4.0),
        (5, None, 60.0, 32.0),
        (6, None, 60.0, 60.0),
        (500, None, 60.0, 60.0),
        (-1, None, 60.0, 1.0),
        (0, 7.0, 60.0, 7.0),
        (4, 0.0, 60.0, 0.0),
        (0, 3600.0, 60.0, 60.0),
        (3, None, 5.0, 5.0),
    ],
)
def test_backoff_delay(
    attempt: int, retry_after: float | None, cap: float, expected: float
) -> None:
    assert backoff_delay(attempt, retry_after, cap) == expected


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable(status: int) -> None:
    assert status in RETRYABLE_STATUS


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 416, 501, 505])
def test_not_retryable(status: int) -> None:
    assert status not in RETRYABLE_STATUS

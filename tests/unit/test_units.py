from __future__ import annotations

import pytest

from engine.errors import UserError
from engine.units import duration, human, parse_duration, parse_size, rate


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("64K", 65536),
        ("64KiB", 65536),
        ("1m", 1024**2),
        ("2G", 2 * 1024**3),
        (" 3 T ", 3 * 1024**4),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "1x", "G", "12 KB B"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UserError, match="not a size"):
        parse_size(text)


def test_human() -> None:
    assert human(512) == "512 B"
    assert human(1536) == "1.5 KiB"
    assert human(3 * 1024**3) == "3.0 GiB"


def test_rates_are_always_mib_per_second() -> None:
    assert rate(45 * 1024**2) == "45.0 MiB/s"
    assert rate(20 * 1024**3) == "20480.0 MiB/s"
    assert rate(1024) == "0.0 MiB/s"


def test_durations_in_seconds_minutes_hours() -> None:
    assert duration(0.24) == "0.2 s"
    assert duration(16.04) == "16.0 s"
    assert duration(59.96) == "1 min 0 s"
    assert duration(75) == "1 min 15 s"
    assert duration(5400) == "1 h 30 min"
    for seconds in (0.2, 16.0, 75.0, 3599.0, 5400.0):
        assert parse_duration(duration(seconds)) == seconds

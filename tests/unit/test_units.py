from __future__ import annotations

import pytest

from engine.errors import UserError
from engine.units import human, parse_size


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

"""What `ferry lab status` reports for one service."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    up: bool
    detail: str

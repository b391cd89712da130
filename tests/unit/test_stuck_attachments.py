"""A volume held by a Cinder attachment that never completed (break-it pass 12b, item 4) fails
at once where ferry would wait, never after 300 s: an in-repo fake of the block storage and
compute proxies (only what engine.providers.openstack.volumes calls)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from openstack import exceptions as os_exc

from engine.errors import OpenStackError
from engine.providers.openstack import volumes


@dataclass
class Att:
    id: str
    status: str
    instance: str | None
    volume_id: str = "vol-1"


@dataclass
class Vol:
    id: str = "vol-1"
    status: str = "available"
    attachments: list[dict[str, Any]] = field(default_factory=list)


class BlockStorage:
    def __init__(self, volume: Vol, attachments: list[Att]) -> None:
        self.volume, self.rows = volume, attachments
        self.deleted: list[str] = []

    def get_volume(self, _volume_id: str) -> Vol:
        return self.volume

    def attachments(self) -> list[Att]:
        return list(self.rows)

    def delete_attachment(self, att_id: str) -> None:
        self.deleted.append(att_id)
        self.rows = [a for a in self.rows if a.id != att_id]
        self.volume.status = "in-use" if self.rows else "available"


class Compute:
    def __init__(self) -> None:
        self.attached: list[str] = []

    def create_volume_attachment(self, server_id: str, volume: str) -> None:
        self.attached.append(server_id)


class Conn:
    def __init__(self, volume: Vol, attachments: list[Att]) -> None:
        self.block_storage = BlockStorage(volume, attachments)
        self.compute = Compute()


def reserved() -> Conn:
    """A volume nova's reserve left: reserved, its attachment for the conversion host."""
    return Conn(Vol(status="reserved"), [Att("att-1", "reserved", "host-1")])


def test_a_wait_for_available_fails_at_once_on_a_reserved_volume() -> None:
    began = time.monotonic()
    with pytest.raises(OpenStackError, match="does not change by itself"):
        volumes.wait_volume(reserved(), "vol-1", "available", timeout=5)
    assert time.monotonic() - began < 1


def test_a_wait_for_in_use_gives_up_on_reserved_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(volumes, "RESERVED_GRACE", 0.5)
    began = time.monotonic()
    with pytest.raises(OpenStackError, match="never completed"):
        volumes.wait_volume(reserved(), "vol-1", "in-use", timeout=30)
    assert time.monotonic() - began < 5


def test_attach_refuses_a_volume_with_a_half_made_attachment_without_asking_nova() -> None:
    conn = reserved()
    with pytest.raises(OpenStackError, match="att-1 'reserved'"):
        volumes.attach(conn, "host-1", "vol-1")
    assert conn.compute.attached == []


def test_attach_refuses_a_volume_another_server_holds() -> None:
    conn = Conn(Vol(status="in-use"), [Att("att-2", "attached", "someone-else")])
    with pytest.raises(OpenStackError, match="attached to server someone-else"):
        volumes.attach(conn, "host-1", "vol-1")
    assert conn.compute.attached == []


def test_only_the_planned_half_made_attachments_are_deleted() -> None:
    conn = Conn(
        Vol(status="reserved"),
        [Att("att-1", "reserved", "host-1"), Att("att-3", "attached", "host-1")],
    )
    assert volumes.delete_attachments(conn, "vol-1", ["att-1", "att-3", "gone"]) == ["att-1"]
    assert conn.block_storage.deleted == ["att-1"]


def test_a_cloud_that_forbids_listing_attachments_is_not_checked() -> None:
    """As the plan (attachments None): a 403 on the list is no finding, the volume's own status
    is still checked."""
    conn = Conn(Vol(status="available"), [])

    def forbidden() -> list[Att]:
        raise os_exc.ForbiddenException("policy does not allow attachment listing")

    conn.block_storage.attachments = forbidden  # type: ignore[method-assign]
    volumes.check_attachments(conn, "vol-1", ("host-1",))


class Detaching(BlockStorage):
    """A volume Cinder is detaching: 'detaching' for the first `reads` reads, then available."""

    def __init__(self, reads: int) -> None:
        super().__init__(Vol(status="detaching"), [])
        self.reads = reads

    def get_volume(self, _volume_id: str) -> Vol:
        self.reads -= 1
        if self.reads < 0:
            self.volume.status = "available"
        return self.volume


def test_settle_waits_while_cinder_detaches_the_volume() -> None:
    """break-it 14c F1: a volume an interrupted apply's host is still detaching as the user
    re-runs is waited for (it settles by itself), not taken for stuck."""
    conn = Conn(Vol(), [])
    conn.block_storage = Detaching(reads=2)
    assert volumes.settle(conn, "vol-1", timeout=30) == "detaching"
    assert conn.block_storage.volume.status == "available"


def test_settle_returns_at_once_on_a_settled_volume() -> None:
    conn = Conn(Vol(status="in-use"), [])
    assert volumes.settle(conn, "vol-1", timeout=30) == ""


def test_settle_is_bounded_and_names_no_state_reset() -> None:
    conn = Conn(Vol(), [])
    conn.block_storage = Detaching(reads=10**6)
    began = time.monotonic()
    with pytest.raises(OpenStackError) as err:
        volumes.settle(conn, "vol-1", timeout=0.5)
    assert time.monotonic() - began < 10
    assert "still detaching after" in str(err.value)
    assert "--state" not in str(err.value)

"""Addresses name everything ferry manages: `vm.web01`, `vm.web01.disk[2000]`, `vm.web01.port[0]`,
`vm.web01.snapshot`, `vm.web01.server`, `flavor.m1-web01`; with output: image also
`vm.web01.image[2000]` (a disk's Glance image) and `vm.web01.volume[2000]` (the volume made from
it). A name that is not a plain identifier is
quoted: `vm["Reporting Ünit 1"].disk[2000]`. `str()` and `parse()` round-trip exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from engine.errors import UserError

KINDS = ("vm", "flavor", "network", "host")
PARTS = ("cbt", "snapshot", "disk", "port", "server", "conversion", "image", "volume")
INDEXED = ("disk", "port", "image", "volume")  # image, volume: output: image (per disk key)
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # whole name (fullmatch: "$" allows a "\n")
_ADDRESS = re.compile(
    r"""^(?P<kind>[a-z]+)
        (?:\.(?P<plain>[A-Za-z_][A-Za-z0-9_-]*)|\[(?P<quoted>"(?:[^"\\]|\\.)*")\])
        (?:\.(?P<part>[a-z]+)(?:\[(?P<index>\d+)\])?)?$""",
    re.VERBOSE,
)


@dataclass(frozen=True, order=True)
class Address:
    kind: str
    name: str
    part: str | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown address kind {self.kind!r}")
        if self.part is not None and self.part not in PARTS:
            raise ValueError(f"unknown address part {self.part!r}")
        if (self.index is not None) != (self.part in INDEXED):
            raise ValueError(f"{self.part!r} {'needs' if self.index is None else 'takes no'} index")

    def __str__(self) -> str:
        plain = _PLAIN.fullmatch(self.name)
        name = f".{self.name}" if plain else f"[{json.dumps(self.name, ensure_ascii=False)}]"
        part = f".{self.part}" if self.part else ""
        index = f"[{self.index}]" if self.index is not None else ""
        return f"{self.kind}{name}{part}{index}"

    @property
    def vm(self) -> Address:
        """The address of the VM this one belongs to (itself for a VM)."""
        return Address(self.kind, self.name)

    def child(self, part: str, index: int | None = None) -> Address:
        return Address(self.kind, self.name, part, index)

    @staticmethod
    def parse(text: str) -> Address:
        match = _ADDRESS.fullmatch(text.strip())
        if match is None:
            bare = text.strip() and not any(c in text for c in '.[]"')
            example = f"vm.{text.strip()}" if bare else "vm.web01"
            if bare and not _PLAIN.fullmatch(text.strip()):
                example = f"vm[{json.dumps(text.strip(), ensure_ascii=False)}]"
            raise UserError(
                f"not an address: {text!r} (a VM's address is {example}; a disk's "
                f"{example}.disk[2000])"
            )
        name = match["plain"] if match["plain"] is not None else json.loads(match["quoted"])
        index = int(match["index"]) if match["index"] is not None else None
        try:
            return Address(match["kind"], name, match["part"], index)
        except ValueError as exc:
            raise UserError(f"not an address: {text!r}: {exc}") from exc


def vm(name: str) -> Address:
    return Address("vm", name)

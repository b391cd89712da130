"""vSphere tags, which the SOAP API does not expose: the vSphere Automation REST API
(/rest/com/vmware/cis/...), present from vSphere 6.5 to 8, with the same TLS rules as the SOAP
session (CA file, pinned thumbprint, or insecure when the spec says so).

The password goes in the Authorization header of one login request; the session token lives in
memory and is deleted at the end.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.errors import VSphereError
from engine.providers.vsphere.session import VCenterTarget, check_thumbprint, ssl_context

CIS = "/rest/com/vmware/cis"
TIMEOUT = 30


class TagClient:
    def __init__(self, target: VCenterTarget) -> None:
        self.target = target
        self.base = f"https://{target.host}:{target.port}"
        self.ctx = ssl_context(target)
        self.token = ""

    def _call(self, method: str, path: str, body: Any = None, auth: str = "") -> Any:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        if self.token:
            headers["vmware-api-session-id"] = self.token
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.ctx) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise VSphereError(
                f"vCenter tagging API {method} {path.split('?', maxsplit=1)[0]}: HTTP {exc.code}"
            ) from exc
        except OSError as exc:
            raise VSphereError(f"vCenter tagging API unreachable: {exc}") from exc
        return json.loads(text).get("value") if text else None

    def login(self) -> None:
        check_thumbprint(self.target)
        basic = base64.b64encode(f"{self.target.user}:{self.target.password}".encode()).decode()
        self.token = str(self._call("POST", f"{CIS}/session", auth=f"Basic {basic}"))

    def logout(self) -> None:
        if self.token:
            self._call("DELETE", f"{CIS}/session")
            self.token = ""

    def tag_ids(self) -> dict[str, str]:
        """'category:tag' → tag id, for every tag."""
        categories = {
            cid: self._call("GET", f"{CIS}/tagging/category/id:{cid}")["name"]
            for cid in self._call("GET", f"{CIS}/tagging/category") or []
        }
        out = {}
        for tid in self._call("GET", f"{CIS}/tagging/tag") or []:
            tag = self._call("GET", f"{CIS}/tagging/tag/id:{tid}")
            out[f"{categories.get(tag['category_id'], '?')}:{tag['name']}"] = str(tid)
        return out

    def attached_vms(self, tag_id: str) -> frozenset[str]:
        """Morefs of the VMs carrying a tag."""
        objects = self._call(
            "POST",
            f"{CIS}/tagging/tag-association/id:{tag_id}?~action=list-attached-objects",
            {},  # an empty body: vcsim insists on one, vSphere accepts it
        )
        return frozenset(o["id"] for o in objects or [] if o.get("type") == "VirtualMachine")

    def create_tag(self, category: str, name: str) -> str:
        """The tag's id, creating its category and itself when missing (the lab's estate)."""
        known = self.tag_ids()
        if f"{category}:{name}" in known:
            return known[f"{category}:{name}"]
        categories = {
            self._call("GET", f"{CIS}/tagging/category/id:{cid}")["name"]: cid
            for cid in self._call("GET", f"{CIS}/tagging/category") or []
        }
        cid = categories.get(category) or self._call(
            "POST",
            f"{CIS}/tagging/category",
            {"create_spec": {"name": category, "description": "", "cardinality": "MULTIPLE",
                             "associable_types": []}},
        )  # fmt: skip
        spec = {"create_spec": {"name": name, "description": "", "category_id": cid}}
        return str(self._call("POST", f"{CIS}/tagging/tag", spec))

    def attach(self, tag_id: str, moref: str) -> None:
        self._call(
            "POST",
            f"{CIS}/tagging/tag-association/id:{tag_id}?~action=attach",
            {"object_id": {"id": moref, "type": "VirtualMachine"}},
        )


@contextmanager
def tag_session(target: VCenterTarget) -> Iterator[TagClient]:
    client = TagClient(target)
    client.login()
    try:
        yield client
    finally:
        client.logout()


def tagged_vms(target: VCenterTarget, wanted: set[str]) -> dict[str, frozenset[str]]:
    """'category:tag' → morefs of its VMs, for the wanted tags (a tag that does not exist maps
    to no VM: the planner then reports the selector as selecting nothing)."""
    if not wanted:
        return {}
    with tag_session(target) as client:
        ids = client.tag_ids()
        return {tag: client.attached_vms(ids[tag]) if tag in ids else frozenset() for tag in wanted}

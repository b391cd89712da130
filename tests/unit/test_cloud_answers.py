"""A cloud's refusal is said in its own words (break-it 12j M3): a Cinder 413 on a volume create
read "HttpException: 413: Client Error for url: http://127.0.0.1:48769/v3/volumes,
VolumeSizeExceedsAvailableQuota: ..." (openstacksdk's class name and the endpoint's internal URL);
now the service's message and the HTTP status. The exception is openstacksdk's own, made from a
response as it makes it (raise_from_response)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from openstack import exceptions as os_exc

from engine.errors import OpenStackError
from engine.providers.openstack import volumes
from engine.providers.openstack.retry import answer

QUOTA = (
    "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed "
    "gigabytes_localds-0 quota. Requested 2G, quota is 0G and 0G has been consumed."
)


def refused(status: int, body: dict[str, Any]) -> os_exc.HttpException:
    response = requests.Response()
    response.status_code = status
    response.headers["content-type"] = "application/json"
    response._content = json.dumps(body).encode()
    response.request = requests.Request("POST", "http://127.0.0.1:48769/v3/volumes").prepare()
    response.url = str(response.request.url)
    try:
        os_exc.raise_from_response(response)
    except os_exc.HttpException as exc:
        return exc
    raise AssertionError("not raised")


def test_an_http_error_is_the_services_message_and_status() -> None:
    exc = refused(413, {"overLimit": {"code": 413, "message": QUOTA}})
    assert "127.0.0.1" in str(exc)  # what the user saw before
    assert answer(exc) == f"{QUOTA} (HTTP 413)"


def test_other_errors_keep_their_first_lines() -> None:
    assert answer(os_exc.ResourceTimeout("timed out\nwaiting")) == "timed out waiting"
    assert answer(refused(500, {})).startswith("HttpException: 500")  # no message of its own


def test_a_volume_create_refused_by_a_quota_says_so_in_one_line() -> None:
    def create_volume(**_: Any) -> None:
        raise refused(413, {"overLimit": {"code": 413, "message": QUOTA}})

    conn = SimpleNamespace(block_storage=SimpleNamespace(create_volume=create_volume))
    with pytest.raises(OpenStackError) as raised:
        volumes.create_volume(conn, "web01-2000", 2, "localds-0", {})
    assert str(raised.value) == f"creating volume web01-2000: {QUOTA} (HTTP 413)"


def test_an_extend_refused_by_the_cap_on_one_volume_says_so_in_one_line() -> None:
    """Break-it 12k F4: the extend's 413 (per_volume_gigabytes) came out as "internal error
    (HttpException ...): a fault in ferry ... please report it": its SDK error was not wrapped
    as the other calls' are."""
    limit = (
        "VolumeSizeExceedsLimit: Requested volume size 4G is larger than maximum allowed limit 3G."
    )

    def extend_volume(*_: Any) -> None:
        raise refused(413, {"overLimit": {"code": 413, "message": limit}})

    volume = SimpleNamespace(id="v1", size=2, status="available")
    storage = SimpleNamespace(get_volume=lambda _id: volume, extend_volume=extend_volume)
    with pytest.raises(OpenStackError) as raised:
        volumes.extend(SimpleNamespace(block_storage=storage), "v1", 4)
    assert str(raised.value) == f"extending volume v1 to 4 GiB: {limit} (HTTP 413)"

"""Riding out a cloud service that is briefly down.

keystoneauth already retries a request whose connection is refused or reset (connect_retries in
`read.connect`). What it does not retry is a server-side error that a service reports for
another one behind it — nova answering 500 `CinderConnectionFailed` while cinder-api restarts,
a 502/503/504 from a proxy. `transient` repeats a call that is safe to repeat (a read, a
metadata PUT, a delete, an attach that re-checks first) on those answers, with bounded backoff,
logging each retry. When the outage outlasts it, the last error is raised as OpenStackError.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc

from engine.errors import OpenStackError, one_line

T = TypeVar("T")
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
UNAVAILABLE = "Service is unavailable at this time"
ATTEMPTS = 12  # waits of 1, 2, 4, 8, then 15 s seven times: two minutes of outage ridden out
FIRST_DELAY = 1.0
MAX_DELAY = 15.0
log = logging.getLogger("ferry.openstack")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ksa_exc.RetriableConnectionFailure | ksa_exc.ConnectionError):
        return True
    if not isinstance(exc, os_exc.HttpException):
        return False
    status = getattr(exc, "status_code", None)
    # nova's 409 while the compute service it needs is down (its heartbeats missed)
    return status in TRANSIENT_STATUS or (status == 409 and UNAVAILABLE in str(exc))


def transient(call: Callable[[], T], what: str, *, attempts: int = ATTEMPTS) -> T:
    """`call()`, repeated while the cloud answers with a transient error."""
    delay = FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (os_exc.SDKException, ksa_exc.ClientException) as exc:
            if not is_transient(exc):
                raise OpenStackError(f"{what}: {answer(exc)}") from exc
            if attempt == attempts:
                raise OpenStackError(
                    f"{what}: still failing after {attempts} attempts: {answer(exc)}"
                ) from exc
            log.warning("%s: %s; retrying in %.0f s", what, answer(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    raise AssertionError("unreachable")


def answer(exc: BaseException) -> str:
    """The cloud's answer in a user's words: for an HTTP error the service's own message and
    its status (`VolumeSizeExceedsAvailableQuota: Requested volume ... (HTTP 413)`), not
    openstacksdk's text, which leads with its class name and the endpoint's internal URL
    (break-it 12j M3); any other error's first two lines."""
    said = str(exc.details or "").strip() if isinstance(exc, os_exc.HttpException) else ""
    if said not in ("", "{}"):  # "{}": an empty JSON body
        return f"{one_line(said)} (HTTP {getattr(exc, 'status_code', None)})"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


_URL = re.compile(r"connection to (\S+?):? ")
_REASON = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")


def unreachable(exc: BaseException) -> str:
    """keystoneauth's connection failure in one line: `cannot reach <url>: <reason>` (its
    message nests urllib3's whole retry story, e.g. `... [Errno 111] Connection refused`)."""
    text = str(exc)
    url, reason = _URL.search(text), _REASON.findall(text)
    where = url.group(1) if url else "the cloud"
    why = reason[-1].strip() if reason else one_line(text)
    return f"cannot reach {where}: {why}"

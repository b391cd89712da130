"""One way to wait for an OpenStack resource to reach a status: re-fetch it each time
(openstacksdk's wait_for_status returns at once when the *local* object already shows the wanted
status, which after a detach or revert it may), fail at once on a failure status, back off up to
a cap."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc

from engine.errors import OpenStackError
from engine.providers.openstack.retry import answer, is_transient, log


def wait_for(
    fetch: Callable[[], Any],
    what: str,
    ready: Callable[[Any], bool],
    failure: Callable[[Any], str | None],
    *,
    timeout: float,
    goal: str | None = None,
    delay: float = 0.2,
    max_delay: float = 3.0,
    stuck: Callable[[Any], str] = lambda _: "",
) -> Any:
    """Re-fetch until `ready(resource)`; `failure(resource)` returning a message fails at once;
    `what` names the resource in errors ("volume <id>"), `goal` the status waited for."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resource = fetch()
        except (os_exc.SDKException, ksa_exc.ClientException) as exc:
            if not is_transient(exc) or time.monotonic() > deadline:
                raise OpenStackError(f"{what}: {answer(exc)}") from exc
            log.warning("%s: %s; still waiting", what, str(exc).splitlines()[0])
            time.sleep(max_delay)
            continue
        if ready(resource):
            return resource
        message = failure(resource)
        if message is not None:
            raise OpenStackError(message)
        if time.monotonic() > deadline:
            waiting = f" (waiting for {goal})" if goal else ""
            raise OpenStackError(
                f"{what} still {resource.status} after {timeout:.0f} s{waiting}{stuck(resource)}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, max_delay)

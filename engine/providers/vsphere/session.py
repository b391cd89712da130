"""vCenter sessions: login with TLS verified (CA file or pinned SHA-1 thumbprint), logout.

The password is read from a file or handed in by the caller; it is never logged or put on argv.
Connection and login failures become VSphereError with a one-line cause.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from engine.errors import VSphereError


@dataclass(frozen=True)
class VCenterTarget:
    """Where and how to log in. `password` is the secret itself and is kept out of repr."""

    host: str
    port: int
    user: str
    password: str
    cafile: Path | None = None
    thumbprint: str | None = None
    insecure: bool = False

    def __repr__(self) -> str:
        return f"VCenterTarget({self.user}@{self.host}:{self.port})"


def _ssl_context(target: VCenterTarget) -> ssl.SSLContext:
    if target.insecure or target.thumbprint:
        # A pinned thumbprint is checked by _check_thumbprint before login.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(target.cafile) if target.cafile else None)


def server_thumbprint(host: str, port: int, timeout: float = 10.0) -> str:
    """SHA-1 thumbprint of the server's certificate, as vSphere prints it (AA:BB:...)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise VSphereError(f"cannot reach vCenter at {host}:{port}: {exc}") from exc
    if der is None:
        raise VSphereError(f"vCenter at {host}:{port} sent no certificate")
    digest = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _check_thumbprint(target: VCenterTarget) -> None:
    if target.thumbprint is None or target.insecure:
        return
    seen = server_thumbprint(target.host, target.port)
    if seen.replace(":", "").lower() != target.thumbprint.replace(":", "").lower():
        raise VSphereError(
            f"vCenter {target.host}:{target.port} presented thumbprint {seen}, "
            f"not the pinned {target.thumbprint}"
        )


def connect(target: VCenterTarget) -> Any:
    """Log in and return the ServiceInstance."""
    _check_thumbprint(target)
    try:
        return SmartConnect(
            host=target.host,
            port=target.port,
            user=target.user,
            pwd=target.password,
            sslContext=_ssl_context(target),
            connectionPoolTimeout=30,
        )
    except vim.fault.InvalidLogin as exc:
        raise VSphereError(
            f"vCenter {target.host}:{target.port} rejected the login for {target.user}"
        ) from exc
    except ssl.SSLError as exc:
        raise VSphereError(
            f"TLS verification of vCenter {target.host}:{target.port} failed: {exc.reason}"
        ) from exc
    except (OSError, vim.fault.HostConnectFault) as exc:
        raise VSphereError(f"cannot connect to vCenter {target.host}:{target.port}: {exc}") from exc


@contextmanager
def session(target: VCenterTarget) -> Iterator[Any]:
    """A logged-in ServiceInstance, logged out at the end."""
    si = connect(target)
    try:
        yield si
    finally:
        Disconnect(si)

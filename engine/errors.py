"""The one exception hierarchy of ferry.

Every failure ferry reports is one of these; SDK exceptions (vmodl faults, openstack.exceptions,
nbd.Error, OSError from subprocesses) are mapped at the boundary with ``raise ... from exc``.
The CLI prints ``error: <message>`` (one line) and exits 1 for any of them, without a traceback;
an InvalidSpecError prints its diagnostics, one line per problem::

    FerryError
    ├── UserError          bad input from the user: arguments, names, offsets; nothing was changed
    │   └── InvalidSpecError      the spec has errors: one `file:line:col: error: ...` line each
    ├── LabError           the embedded lab: build, start, stop, state of its services
    ├── OpenStackError     an OpenStack call failed or a resource did not reach its state
    │   └── ChangedOutsideError   a volume changed outside ferry after it was checked: unwritten
    ├── VSphereError       a vCenter/ESXi call failed (connection, login, fault)
    │   ├── ChangeTrackingError   CBT off, reset or changeId invalid: copy in full, never skip
    │   └── SourceChangedError    the VM's disks or NICs are not those the plan was for: plan again
    ├── DataplaneError     nbdkit / libnbd: serving or copying disk bytes
    │   └── VerifyError           a copy's sha256 differs from the source's: the volume is tainted
    ├── StoppedError       the user stopped the apply (SIGINT/SIGTERM): a step ended at a checkpoint
    ├── ConversionError    virt-v2v-in-place could not convert the guest
    ├── AgentError         a conversion host's `ferry agent`: silent, refused the task, or failed
    └── StateError         the state store: unreadable, newer format, or locked
        └── StateLockedError      another process holds the state lock
"""

from __future__ import annotations


class FerryError(Exception):
    """Base of every error ferry reports to its user."""


def one_line(text: str) -> str:
    """A message on one line: its non-blank lines, stripped, joined with ' | ' (a tool's output
    quoted in an error, an SDK's multi-line fault)."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def step_error(exc: BaseException) -> str:
    """A failed step's error as its user reads it: ferry's own message; any other exception (a
    bug: a KeyError's message is only the missing key's repr) names its type and says it is
    ferry's fault, on one line."""
    if isinstance(exc, FerryError):
        return one_line(str(exc))
    return one_line(
        f"internal error ({type(exc).__name__}: {exc}): a fault in ferry, not in the plan; "
        "the apply log has the step, please report it"
    )


class UserError(FerryError):
    """The user asked for something invalid; nothing was changed."""


class InvalidSpecError(UserError):
    """The spec has errors; `lines` holds one rendered diagnostic per problem
    (``file:line:col: error: summary (at json.path)``), which the CLI prints as they are."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class LabError(FerryError):
    """The embedded lab could not do what was asked."""


class OpenStackError(FerryError):
    """An OpenStack call failed or a resource did not reach the expected state."""


class ChangedOutsideError(OpenStackError):
    """A volume was attached or changed by something other than ferry after ferry checked it
    (its Cinder updated_at moved, e.g. while its copy waited in a host's queue): nothing was
    written to it; the next plan copies it in full (model.state.changed_outside)."""


class VSphereError(FerryError):
    """A vSphere API call failed."""


class AgentError(FerryError):
    """A host-bound step sent to a conversion host's agent (through the broker) did not run:
    no agent took it in time, the agent went silent, or it refused it (agent digest, host,
    state lineage)."""


class DataplaneError(FerryError):
    """Serving or copying disk bytes failed."""


class VerifyError(DataplaneError):
    """A copied volume's sha256 differs from its source's: the copy is recorded tainted and
    redone in full by the next apply."""


class ChangeTrackingError(VSphereError):
    """A CBT query faulted: tracking is off, was reset, or the changeId is not valid here.

    The caller must fall back to a full copy; it must never treat this as "nothing changed".
    """


class SourceChangedError(VSphereError):
    """A VM's disks (added, removed, grown) or, for a cutover, its NICs (added, removed, a new
    MAC, another portgroup) are not those the applied plan was made for: its sync would copy
    into volumes that do not fit, its server boot without a NIC or on the wrong network, so the
    VM's changes stop (before its ports and a cutover's power-off) and the user plans again."""


class StateError(FerryError):
    """The state store cannot be used as asked."""


class NoStateError(StateError):
    """There is no state yet where the user pointed (nothing was ever applied there)."""


class StateLockedError(StateError):
    """Another ferry process holds the state lock."""


class StateUnreachableError(StateError):
    """The state's database connection was lost and could not be made again within the retry
    window (a PostgreSQL failover that did not end, a network cut): what the apply did since is
    not recorded; the apply settles what it did from its own knowledge and says what is left.
    `brief`: the state and since when, for the lines that repeat it (the message has the cause)."""

    def __init__(self, message: str, brief: str = "") -> None:
        super().__init__(message)
        self.brief = brief or message


class StoppedError(FerryError):
    """The apply was asked to stop (SIGINT, SIGTERM) and this step stopped at a checkpoint; the
    next apply resumes from there. `moved`: what a stopped copy did before it stopped (bytes:
    bytes_read, bytes_written, bytes_zeroed, bytes_skipped; retries), empty when nothing was
    copied, so that the apply reports the bytes it really moved."""

    def __init__(self, message: str = "", moved: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.moved: dict[str, int] = dict(moved or {})


class ConversionError(FerryError):
    """Converting the guest for KVM (virt-v2v-in-place) failed; its log says why."""

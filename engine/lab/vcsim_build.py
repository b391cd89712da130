"""Builds the lab's vCenter binary (ferry-vcsim) from Debian's govmomi source.

Debian ships govmomi's `simulator` package but no vcsim main. We copy the whole govmomi tree into
a private GOPATH entry (a partial copy would hide Debian's), add ferry's extensions (ferry_*.go:
CBT, /folder, session expiry) to package `simulator`, apply six small source edits (below), and
build `vcsim/main.go` in GOPATH mode.
The build is skipped when a stamp of the inputs (our sources, the edits, Go and govmomi versions)
matches the one recorded beside the binary.

Usage: python -m engine.lab.vcsim_build OUTPUT
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LabError, one_line

GOVMOMI = Path("/usr/share/gocode/src/github.com/vmware/govmomi")
SOURCES = Path(__file__).parent / "vcsim"
IMPORT_PATH = "github.com/vmware/govmomi"


@dataclass(frozen=True)
class Edit:
    """One exact, unique replacement in a simulator source file."""

    file: str
    old: str
    new: str
    why: str


EDITS = (
    Edit(
        "simulator/property_collector.go",
        "\tobj := res.(*methods.RetrievePropertiesExBody).Res.Returnval.Objects[0]\n"
        "\tif len(obj.PropSet) == 0 {\n",
        "\tobj := res.(*methods.RetrievePropertiesExBody).Res.Returnval.Objects[0]\n"
        "\tif len(obj.PropSet) == 0 && len(obj.MissingSet) == 0 {\n"
        "\t\tbody.Res = &internal.FetchResponse{}\n"
        "\t\treturn body\n"
        "\t}\n"
        "\tif len(obj.PropSet) == 0 {\n",
        "Fetch of an unset property (vm.snapshot after the last snapshot is removed) panicked.",
    ),
    Edit(
        "simulator/snapshot.go",
        'task := CreateTask(v, "removeSnapshot",',
        'task := CreateTask(v.Vm, "removeSnapshot",',
        "RemoveSnapshot_Task named the snapshot, not the VM, as the task's entity.",
    ),
    Edit(
        "simulator/virtual_machine.go",
        "func (vm *VirtualMachine) configure(spec *types.VirtualMachineConfigSpec)"
        " types.BaseMethodFault {\n\tvm.apply(spec)\n",
        "func (vm *VirtualMachine) configure(spec *types.VirtualMachineConfigSpec)"
        " types.BaseMethodFault {\n"
        "\tcbtBefore := vm.Config != nil && cbtOn(vm.Config)\n"
        "\tvm.apply(spec)\n"
        "\tFerryCBT.changeTrackingSet(vm, cbtBefore)\n",
        "Reconfiguring changeTrackingEnabled resets CBT (ferry_cbt.go).",
    ),
    Edit(
        "simulator/virtual_machine.go",
        "\treturn vm.configureDevices(spec)\n}\n\nfunc getVMFileType",
        "\tfault := vm.configureDevices(spec)\n\tFerryCBT.grow(vm)\n\treturn fault\n}\n\n"
        "func getVMFileType",
        "A disk grown by a reconfigure has its lab file grown to the new capacity (ferry_cbt.go).",
    ),
    Edit(
        "simulator/virtual_machine.go",
        "\t// change state\n\tvm.Runtime.PowerState = types.VirtualMachinePowerStatePoweredOff\n",
        "\tif fault := ferryShutdownFault(vm); fault != nil {\n"
        '\t\tr.Fault_ = Fault("", fault)\n'
        "\t\treturn r\n"
        "\t}\n"
        "\tif ferryShutdownLater(ctx, vm) {\n"
        "\t\tr.Res = new(types.ShutdownGuestResponse)\n"
        "\t\treturn r\n"
        "\t}\n"
        "\t// change state\n\tvm.Runtime.PowerState = types.VirtualMachinePowerStatePoweredOff\n",
        "ShutdownGuest faults with ToolsUnavailable unless VMware Tools run (ferry_cbt.go); "
        "with ferry.lab.shutdown_seconds the guest powers off that long after (ferry_power.go).",
    ),
    Edit(
        "simulator/simulator.go",
        "\tmux.HandleFunc(folderPrefix, s.ServeDatastore)\n",
        "\tmux.HandleFunc(folderPrefix, ferryServeFolder(s))\n"
        "\tmux.HandleFunc(ferryExpireSessionsPath, ferryExpireSessions(s))\n",
        "/folder needs the session cookie and serves lab disk extents (ferry_folder.go); "
        "POST /ferry/expire-sessions ends every session (ferry_sessions.go).",
    ),
)


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]} is not installed: run scripts/setup") from exc
    except subprocess.CalledProcessError as exc:
        raise LabError(f"{' '.join(cmd[:2])} failed: {one_line(exc.stderr)}") from exc
    return done.stdout


def stamp() -> str:
    """A digest of every input of the build."""
    digest = hashlib.sha256()
    for src in sorted(SOURCES.iterdir()):
        digest.update(src.name.encode() + src.read_bytes())
    for edit in EDITS:
        digest.update(f"{edit.file}\0{edit.old}\0{edit.new}".encode())
    digest.update(_run(["go", "version"]).encode())
    digest.update((GOVMOMI / "simulator" / "simulator.go").read_bytes())
    return digest.hexdigest()


def apply_edit(root: Path, edit: Edit) -> None:
    path = root / edit.file
    text = path.read_text()
    if text.count(edit.old) != 1:
        raise LabError(f"govmomi source changed: cannot apply edit to {edit.file} ({edit.why})")
    path.write_text(text.replace(edit.old, edit.new))


def build(output: Path) -> bool:
    """Build ferry-vcsim at `output` unless it is up to date; True when it was built."""
    if not GOVMOMI.is_dir():
        raise LabError(
            f"{GOVMOMI} is missing: run scripts/setup (golang-github-vmware-govmomi-dev)"
        )
    want = stamp()
    stamp_file = output.with_name(output.name + ".stamp")
    if output.exists() and stamp_file.exists() and stamp_file.read_text() == want:
        return False
    with tempfile.TemporaryDirectory(prefix="ferry-vcsim-") as tmp:
        gopath = Path(tmp)
        tree = gopath / "src" / IMPORT_PATH
        shutil.copytree(GOVMOMI, tree, symlinks=True)
        for edit in EDITS:
            apply_edit(tree, edit)
        for src in sorted(SOURCES.glob("ferry_*.go")):  # ferry's extensions of package simulator
            shutil.copy(src, tree / "simulator" / src.name)
        main_dir = gopath / "src" / "ferry" / "vcsim"
        main_dir.mkdir(parents=True)
        shutil.copy(SOURCES / "main.go", main_dir / "main.go")
        env = dict(
            os.environ,
            GO111MODULE="off",
            GOPATH=f"{gopath}:/usr/share/gocode",
            GOCACHE=str(output.parent / ".ferry-go-cache"),
            GOFLAGS="",
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        fresh = output.with_name(output.name + ".new")
        _run(["go", "build", "-o", str(fresh), "ferry/vcsim"], env=env)
        fresh.replace(output)  # atomic: a lab running the old binary keeps it
    stamp_file.write_text(want)
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        built = build(Path(argv[0]).resolve())
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"vcsim: {'built' if built else 'up to date'} {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

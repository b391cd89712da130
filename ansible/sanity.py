"""`ansible-test sanity` on the ferry_migrate.ferry collection, offline once primed.

Usage: .venv/bin/python ansible/sanity.py [--prime-venvs] [ansible-test sanity options...]

ansible-test runs each sanity test in a virtual environment of its own, made once per machine
with the test's pinned requirements from PyPI (`--prime-venvs` makes them without running a test:
scripts/setup does it), then reused from its cache. Its bootstrap of pip in a new environment
downloads a get-pip script from Ansible's CI file server, which is not a package registry and is
unreachable here: the script it would download is replaced by one doing the same with the
interpreter's own ensurepip (then `pip install pip==<ansible-test's pin>` from PyPI), saved where
ansible-test looks for its cached copy (its own message names that place for a manual download).
ansible-test's state lives under `$XDG_CACHE_HOME/ferry/ansible-test` (HOME for it only), not in
the user's ~/.ansible.

The collection is copied to a temporary `ansible_collections/ferry_migrate/ferry` (ansible-test
writes tests/output into the tree it tests). Tests run: ansible-test's defaults but pylint and
pep8 (ruff checks and formats the collection's Python with the rest of the repository) and
changelog (the collection keeps no changelog fragments). Exit status: ansible-test's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).parent
COLLECTION = HERE / "ansible_collections" / "ferry_migrate" / "ferry"
SKIPPED = ("pylint", "pep8", "changelog")
# ansible-test's pip bootstrap, done offline: `sys.argv[1:]` are pip install options and the
# pinned packages, plus get-pip's own --no-setuptools / --no-wheel (nothing to do here)
BOOTSTRAP = """\
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True)
subprocess.run([sys.executable, "-m", "pip", "install", "--force-reinstall", *args], check=True)
"""


def home() -> Path:
    """Where ansible-test keeps its virtual environments and cache for ferry."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ferry" / "ansible-test"


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def bootstrap(where: Path) -> None:
    """The offline stand-in for the get-pip script ansible-test would download, saved under the
    name it looks for (its pinned pip version)."""
    from ansible_test._internal.python_requirements import get_venv_packages

    pip = get_venv_packages(SimpleNamespace(version=python_version()))["pip"]  # type: ignore[arg-type]
    cache = where / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"get_pip_{pip.replace('.', '_')}.py").write_text(BOOTSTRAP)


def run(args: list[str]) -> int:
    """ansible-test sanity on a copy of the collection, with `args` added; its exit status."""
    where = home()
    bootstrap(where)
    tool = Path(sys.executable).parent / "ansible-test"
    skips = [f"--skip-test={name}" for name in SKIPPED]
    with tempfile.TemporaryDirectory(prefix="ferry-sanity-") as tmp:
        copy = Path(tmp) / "ansible_collections" / "ferry_migrate" / "ferry"
        shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns("__pycache__", "output"))
        command = [str(tool), "sanity", "--python", python_version(), *skips, *args]
        env = {**os.environ, "HOME": str(where), "LC_ALL": "C.UTF-8"}
        return subprocess.run(command, cwd=copy, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

# Copyright: ferry maintainers
# Apache License 2.0 (see LICENSE in the ferry repository)
"""Documentation shared by the modules that read ferry's state (plan, apply): one text, so the
two modules cannot drift apart (`extends_documentation_fragment: ferry_migrate.ferry.state`)."""

from __future__ import annotations


class ModuleDocFragment:
    """The state option and the library requirement, as ansible-doc merges them into a module's
    DOCUMENTATION."""

    DOCUMENTATION = r"""
options:
  state_location:
    description:
      - Where ferry's state is, as C(--state) takes it, a file, C(env:NAME) (a PostgreSQL DSN
        in that environment variable) or a C(postgresql://) URL without password.
      - Default is the spec's C(state) block, then C($FERRY_STATE_DSN), C($FERRY_STATE),
        C(./state/ferry.db).
      - A file's directory must exist (ferry creates the state file, not its directory; only
        the default's C(./state) is made).
    type: str
requirements:
  - ferry (its Python library) in the Python the module runs with
"""

"""Where the Python interpreters and tools the tests run live: the repository's .venv, Debian's
``/usr/bin/python3`` and the pyenv builds of the target Pythons (``tests/bootstrap.sh`` installs them).

The shell scripts have the same lookup as ``sg_python_bin`` in ``tests/tools/common.sh``.
"""

from __future__ import annotations

import glob
import os
import sys

from .host import HarnessError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SYSTEM_PYTHON = "/usr/bin/python3"
PYENV_ROOT = os.environ.get("PYENV_ROOT", "/root/.pyenv")


def _version_key(path: str):
    # .../versions/3.9.18/bin/python3.9 -> [3, 9, 18]: 3.9.18 sorts after 3.9.9
    return [int(x) if x.isdigit() else x for x in path.split("/")[-3].split(".")]


def pyenv_python(version: str) -> str:
    """The newest pyenv interpreter ``version`` (X.Y): a real binary, not a shim, which needs
    ``PYENV_VERSION`` and does not work where the environment is cleared."""
    found = sorted(glob.glob(f"{PYENV_ROOT}/versions/{version}.*/bin/python{version}"), key=_version_key)
    if not found:
        raise HarnessError(f"pyenv Python {version} not found under {PYENV_ROOT}/versions "
                           "(tests/bootstrap.sh installs it)")
    return found[-1]


def venv_bin(name: str) -> str:
    """A program of the repository's .venv (ansible-playbook, ...), else the one beside this Python."""
    path = os.path.join(REPO, ".venv", "bin", name)
    return path if os.path.exists(path) else os.path.join(os.path.dirname(sys.executable), name)


def venv_python() -> str:
    """The .venv's Python (ansible-core and psutil are installed there), else this one."""
    path = os.path.join(REPO, ".venv", "bin", "python")
    return path if os.path.exists(path) else sys.executable

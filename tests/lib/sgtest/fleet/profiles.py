"""How fleet hosts differ: the interpreter Ansible uses there and whether psutil imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ..interpreters import SYSTEM_PYTHON, pyenv_python


@dataclass(frozen=True)
class Profile:
    """One kind of host. ``groups`` are the inventory groups its hosts are in."""

    name: str
    python: str  # "system" or a pyenv version "3.9"
    psutil: bool  # expected to be importable by that interpreter on that host
    hide_psutil: bool = False  # whiteout psutil in Debian's dist-packages on this host
    groups: Tuple[str, ...] = ()

    def interpreter(self) -> str:
        return SYSTEM_PYTHON if self.python == "system" else pyenv_python(self.python)

    def spec(self) -> dict:
        """What the fleet's state file records, so a fleet can be found again from a fresh process."""
        return {"name": self.name, "python": self.python, "psutil": self.psutil,
                "hide_psutil": self.hide_psutil, "groups": list(self.groups)}


# Hosts take these in turn: sghost01 debian-py311, sghost02 pyenv-py39, sghost03 pyenv-py313,
# sghost04 debian-py311-nopsutil, sghost05 debian-py311, ...
PROFILES: Tuple[Profile, ...] = (
    Profile("debian-py311", "system", True, False, ("py311", "psutil", "debian_python")),
    Profile("pyenv-py39", "3.9", False, False, ("py39", "no_psutil", "pyenv_python")),
    Profile("pyenv-py313", "3.13", True, False, ("py313", "psutil", "pyenv_python")),
    Profile("debian-py311-nopsutil", "system", False, True, ("py311", "no_psutil", "debian_python")),
)
PROFILE_BY_NAME = {p.name: p for p in PROFILES}

"""A test "host": where users live, where sshd listens, where commands run.

:class:`LocalHost` is the machine itself. :class:`sgtest.fleet.FleetHost` is a host of the
namespaced fleet (tests/fleet/README.md): its own PID, mount and UTS namespaces entered with
``nsenter``, seen from outside through ``/proc/INIT/root``. The rest of the harness only talks
to a host through these members:

``wrap(argv)`` / ``run`` / ``spawn``  run a command *on* the host (as root)
``path(p)``    where the host's absolute path ``p`` is reachable from the test process
``proc_root``  the host's procfs (its processes with the PIDs the host itself sees)
``utmp_path``  the host's utmp, as a path usable from the test process
``kill_all_as(uid, gid)``  ``kill(-1, SIGKILL)`` as ``uid``, confined to the host
``sshd``       the host's sshd that sessions log in through (an :class:`sgtest.Sshd`)
``alive()``    whether the host is up
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence

from . import procfs

if TYPE_CHECKING:  # pragma: no cover
    from .sshd import Sshd

REQUIRED_BINARIES = (
    "mosh", "mosh-client", "mosh-server", "ssh", "ssh-keygen", "tmux",
    "useradd", "userdel", "getent", "setsid", "nohup", "bash", "install",
)
SSHD_BINARY = "/usr/sbin/sshd"


class HarnessError(RuntimeError):
    """Something the live harness needs is missing or broken (tests must fail, not skip)."""


class Host:
    """Base class: a place that runs commands as root."""

    name = "host"
    address = "127.0.0.1"
    proc_root = "/proc"
    utmp_path = "/run/utmp"
    run_dir = "/run"
    sshd: Optional["Sshd"] = None  # set by whoever starts the host's sshd

    def alive(self) -> bool:
        """True while the host runs (the machine itself always does)."""
        return True

    def wrap(self, argv: Sequence[str]) -> List[str]:
        """Turn an argv into one that runs *on this host* (identity for the local host)."""
        return list(argv)

    def path(self, p: str) -> str:
        """The host's absolute path ``p`` as the test process reaches it (identity here)."""
        return p

    def kill_all_as(self, uid: int, gid: int) -> None:
        """``kill(-1, SIGKILL)`` with ``uid``: every process of the UID that this host can see."""
        procfs.kill_all_as(uid, gid)

    def run(self, argv: Sequence[str], *, check: bool = True, input: Optional[str] = None,
            timeout: float = 60, env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
        """Run ``argv`` as root on the host; raise :class:`HarnessError` with output on failure."""
        full = self.wrap(argv)
        cp = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout, check=False,
                            env=dict(env) if env is not None else None)
        if check and cp.returncode != 0:
            raise HarnessError(f"{full!r} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}")
        return cp

    def spawn(self, argv: Sequence[str], **popen_kw) -> subprocess.Popen:
        """Start a long-running process on the host (caller owns the Popen)."""
        return subprocess.Popen(self.wrap(argv), **popen_kw)

    def prepare(self) -> None:
        """Create what sshd and mosh need in /run: /run/sshd and /run/utmp (root:utmp 0664)."""
        sshd_dir = os.path.join(self.path(self.run_dir), "sshd")
        os.makedirs(sshd_dir, mode=0o755, exist_ok=True)
        os.chmod(sshd_dir, 0o755)
        if not os.path.exists(self.utmp_path):
            fd = os.open(self.utmp_path, os.O_WRONLY | os.O_CREAT, 0o664)
            os.close(fd)
        st = os.stat(self.utmp_path)
        utmp_gid = grp.getgrnam("utmp").gr_gid
        if st.st_gid != utmp_gid:
            os.chown(self.utmp_path, 0, utmp_gid)
        if (st.st_mode & 0o777) != 0o664:
            os.chmod(self.utmp_path, 0o664)

    def preflight(self) -> None:
        """Raise :class:`HarnessError` listing everything missing for live tests."""
        problems: List[str] = []
        if os.geteuid() != 0:
            problems.append("live tests must run as root (they create users and start sshd)")
        for b in REQUIRED_BINARIES:
            if shutil.which(b) is None:
                problems.append(f"binary {b!r} not found on PATH")
        if not os.access(SSHD_BINARY, os.X_OK):
            problems.append(f"{SSHD_BINARY} missing (install openssh-server)")
        if not os.path.exists("/proc/self/loginuid"):
            problems.append("kernel has no audit loginuid support (/proc/self/loginuid missing)")
        if not hasattr(os, "pidfd_open"):
            problems.append("python lacks os.pidfd_open (need Python 3.9+ on Linux 5.3+)")
        try:
            grp.getgrnam("utmp")
        except KeyError:
            problems.append("group 'utmp' does not exist")
        pam_sshd = self.path("/etc/pam.d/sshd")
        if not os.path.exists(pam_sshd):
            problems.append("/etc/pam.d/sshd missing: sshd would not run pam_loginuid")
        else:
            with open(pam_sshd) as fh:
                if "pam_loginuid" not in fh.read():
                    problems.append("/etc/pam.d/sshd does not use pam_loginuid")
        if problems:
            raise HarnessError("live test harness preflight failed:\n  - " + "\n  - ".join(problems))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.address}>"


class LocalHost(Host):
    """The machine the tests run on."""

    name = "localhost"
    address = "127.0.0.1"


def user_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A small, predictable environment for client-side processes we start."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
    }
    if extra:
        env.update(extra)
    return env

"""A host of the fleet: a PID + mount + UTS namespace below its own init, reached from outside."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import procfs
from ..host import HarnessError, Host, user_env
from ..sshd import banner
from .profiles import PROFILE_BY_NAME, Profile
from .sshd import HostSshd

if TYPE_CHECKING:  # pragma: no cover
    from .fleet import Fleet

NAMESPACES = ("pid", "mnt", "uts")


class FleetHost(Host):
    """One host of the fleet, described by its record in the fleet's state file.

    ``init_pid`` is the global PID of the namespace's PID 1 (``init_starttime`` guards against PID
    reuse). Commands run through ``nsenter -t INIT -p -m -u``; files are reached through
    ``/proc/INIT/root``; ``proc_root`` is the host's own procfs, so every :class:`procfs.Proc` read
    from it carries the PID the host itself sees (and remembers where it came from, for signalling
    and liveness checks). The network namespace is shared: the host is told apart by its loopback
    ``address``.
    """

    def __init__(self, fleet: "Fleet", rec: dict) -> None:
        self.fleet = fleet
        self.record = rec
        self.name: str = rec["name"]
        self.address: str = rec["address"]
        self.init_pid: int = rec["init_pid"]
        self.init_starttime: int = rec["init_start"]
        self.root = f"/proc/{self.init_pid}/root"
        self.proc_root = self.path("/proc")
        self.utmp_path = self.path("/run/utmp")
        self.index: int = rec["index"]
        self.hostname: str = rec["hostname"]
        self.hostdir: str = rec["hostdir"]
        self.profile: Profile = PROFILE_BY_NAME.get(rec["profile"]) or Profile(**rec["profile_spec"])
        self.python: str = rec["python"]
        self.psutil: bool = rec["psutil"]
        self.groups: Tuple[str, ...] = tuple(rec["groups"])
        self.unshare_pid: int = rec["unshare_pid"]
        self.unshare_start: int = rec["unshare_start"]
        self.namespaces: Dict[str, str] = dict(rec.get("ns", {}))
        self.sshd = HostSshd(self, os.path.join(self.hostdir, "sshd.log"))

    # ------------------------------------------------------------------ reaching in
    def path(self, p: str) -> str:
        if not p.startswith("/"):
            raise ValueError(f"host path must be absolute: {p!r}")
        return self.root + p

    def alive(self) -> bool:
        """True while the namespace's init (the host) runs."""
        return procfs.alive(self.init_pid, self.init_starttime)

    def wrap(self, argv: Sequence[str]) -> List[str]:
        return ["nsenter", "-t", str(self.init_pid), "-p", "-m", "-u", "--"] + list(argv)

    def _check_alive(self) -> None:
        if not self.alive():
            raise HarnessError(f"host {self.name} is down (init {self.init_pid} gone)")

    def run(self, argv: Sequence[str], *, check: bool = True, input: Optional[str] = None,
            timeout: float = 60, env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
        self._check_alive()
        return super().run(argv, check=check, input=input, timeout=timeout,
                           env=env if env is not None else user_env())

    def spawn(self, argv: Sequence[str], **popen_kw) -> subprocess.Popen:
        self._check_alive()
        return super().spawn(argv, **popen_kw)

    def kill_all_as(self, uid: int, gid: int) -> None:
        """``kill(-1, SIGKILL)`` as ``uid`` *inside* the host's PID namespace: the same UID on
        other hosts (or on the machine itself) is not touched."""
        if uid == 0:
            raise ValueError("refusing to kill every process of UID 0")
        self.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
                  "kill", "-s", "KILL", "--", "-1"], check=False)

    def run_python(self, code: str, **kw) -> subprocess.CompletedProcess:
        """Run ``code`` with the host's Ansible interpreter (as root, inside the host)."""
        return self.run([self.python, "-c", code], **kw)

    # ------------------------------------------------------------------ from outside
    @property
    def init_log(self) -> str:
        return os.path.join(self.hostdir, "init.log")

    def signal_init(self, sig: int) -> bool:
        """Send ``sig`` to the host's init (from outside its namespace, so the init obeys)."""
        return procfs.signal_proc(self.init_pid, self.init_starttime, sig)

    def global_pid(self, pid: int) -> Optional[int]:
        """The machine-wide PID of this host's process ``pid`` (None if there is none)."""
        want = self.namespaces.get("pid")
        for gp in procfs.all_pids():
            if procfs.ns_link(gp, "pid") != want:
                continue
            status = procfs.read_file(f"/proc/{gp}/status") or ""
            nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if nspid and nspid[-1] == str(pid):
                return gp
        return None

    def sshd_answers(self) -> bool:
        return banner(self.address, 22)

    def __repr__(self) -> str:
        return f"<FleetHost {self.name} {self.address} init={self.init_pid} {self.profile.name}>"

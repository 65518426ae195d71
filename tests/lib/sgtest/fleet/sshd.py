"""A fleet host's own sshd (127.0.0.N:22), run and supervised by the host's init."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Optional

from .. import procfs
from ..sshd import Sshd, banner, sshd_config
from ..waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    from .hosts import FleetHost

CONFIG = "/etc/ssh/sshd_config"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
PID_FILE = "/run/sshd.pid"
KEYS_DIR = "/etc/ssh/authorized_keys"


def host_sshd_config(name: str, address: str) -> str:
    """The host's ``/etc/ssh/sshd_config``: the test sshd's settings on port 22 of its address."""
    return (f"# sshd of fleet host {name} (written by tests/fleet); run by the host's init as sshd -D -e\n"
            # The drop-in directory first, as in Debian's sshd_config: a drop-in's setting wins.
            + sshd_config(address, 22, HOST_KEY, PID_FILE, KEYS_DIR, first=["Include /etc/ssh/sshd_config.d/*.conf"]))


class HostSshd(Sshd):
    """Works wherever an :class:`sgtest.Sshd` is expected (``MoshSession``, ``SshSession``,
    ``run_as``, ``audit_ids``...). ``pid`` is sshd's PID inside the host; it changes when
    the init restarts sshd (:meth:`refresh` re-reads it). :meth:`stop` / :meth:`start` ask
    the init to stop / start it. Config: the host's ``/etc/ssh/sshd_config``; log: the
    host's ``sshd.log`` in the state dir.
    """

    def __init__(self, host: "FleetHost", local_log: str) -> None:
        super().__init__(host, "/etc/ssh", port=22, address=host.address)
        self.host: "FleetHost" = host
        self.port = 22
        self.config_path = CONFIG
        self.host_key = HOST_KEY
        self.pid_file = PID_FILE
        self.keys_dir = KEYS_DIR
        self.local_log = local_log

    def refresh(self) -> Optional[int]:
        """Re-read sshd's PID from its PidFile; None while sshd is not running."""
        try:
            with open(self.host.path(self.pid_file)) as fh:
                pid: Optional[int] = int(fh.read().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None:
            p = procfs.read_proc(pid, self.host.proc_root)
            if p is None or p.zombie or not p.comm.startswith("sshd"):
                pid = None
            else:
                self.starttime = p.starttime
        self.pid = pid
        return pid

    def running(self) -> bool:
        pid = self.refresh()
        return pid is not None and procfs.alive(pid, self.starttime, self.host.proc_root)

    def listening(self) -> bool:
        """sshd runs, holds the listening socket on port 22 and answers with a banner."""
        return (self.running() and self._listening(self.pid, 22, self.host.proc_root)  # type: ignore[arg-type]
                and banner(self.address, 22))

    def start(self, timeout: float = 15.0) -> "HostSshd":
        """Make sure sshd runs and answers (asks the init to start it if needed)."""
        if not self.running():
            self.host.signal_init(signal.SIGUSR1)
        wait_for(self.listening, timeout, lambda: f"sshd of {self.host.name} to listen on {self.address}:22; "
                 f"log tail:\n{self.log_text()[-1500:]}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the init to stop sshd (SIGTERM; not restarted until :meth:`start`)."""
        old = procfs.read_proc(self.pid, self.host.proc_root) if self.running() else None  # type: ignore[arg-type]
        self.host.signal_init(signal.SIGUSR2)
        if old is not None:
            procfs.wait_gone([old], timeout)

    def cut_off(self, timeout: float = 10.0) -> None:
        """Make the host unreachable: stop sshd and end its connections, so that earlier runs' multiplexed ssh
        connections (ControlPersist) do not outlive the listener. :meth:`start` brings it back."""
        self.stop(timeout)
        conns = [p for p in procfs.iter_procs(self.host.proc_root) if p.comm.startswith("sshd")]
        procfs.kill_procs(conns)
        procfs.wait_gone(conns, timeout, proc_root=self.host.proc_root)

    def log_text(self) -> str:
        try:
            with open(self.local_log, errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<HostSshd {self.host.name} {self.address}:22 pid={self.pid}>"

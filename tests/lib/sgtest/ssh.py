"""A plain interactive ``ssh -tt`` login running inside a private tmux."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from . import procfs
from .host import HarnessError
from .tmux import TerminalSession
from .waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    from .sshd import Sshd
    from .users import TestUser


class SshSession(TerminalSession):
    """``ssh -tt user@host [command]`` in its own tmux server.

    After :meth:`wait_connected`: ``client`` is the local ssh process, ``shell``
    the remote login shell (found by the client's TCP source port in the
    shell's ``SSH_CONNECTION``), ``sshd_session`` its parent sshd process.
    """

    def __init__(self, sshd: "Sshd", user: "TestUser", state_dir: str,
                 command: Optional[str] = None, width: int = 160, height: int = 50) -> None:
        super().__init__(sshd, user, state_dir, command, sshd.ssh_argv(user, command, tty=True), width, height)
        self.sshd_session: Optional[procfs.Proc] = None
        self.local_ip: Optional[str] = None
        self.local_port: Optional[int] = None

    def _diag(self) -> str:
        return (f"ssh session {self.user.name}: exit={self.term.exit_status()} client={self.client}\n"
                f"screen:\n{self.term._safe_screen()}\nsshd log tail:\n{self.sshd.log_text()[-1200:]}")

    def _find_client(self) -> Optional[procfs.Proc]:
        if self.term.exit_status() is not None:
            raise HarnessError("ssh exited before the session was found: " + self._diag())
        c = self.term.find_process("ssh")
        if c is None:
            return None
        socks = procfs.inet_sockets(c.pid, "tcp")
        if not socks:
            return None
        self.local_ip, self.local_port = socks[0][0], socks[0][1]
        return c

    def _find_shell(self) -> Optional[procfs.Proc]:
        # SSH_CONNECTION = "client-ip client-port server-ip server-port"
        want = f"{self.local_ip} {self.local_port} {self.sshd.address} "
        for p in self.user.processes():
            env = procfs.environ(p.pid, p.proc_root)
            if not env.get("SSH_CONNECTION", "").startswith(want):
                continue
            parent = procfs.read_proc(p.ppid, p.proc_root)
            if parent is not None and parent.comm.startswith("sshd"):
                self.sshd_session = parent
                return p
        return None

    def wait_connected(self, timeout: float = 30.0, prompt: Optional[str] = None) -> "SshSession":
        self.client = wait_for(self._find_client, timeout, lambda: "ssh client connection; " + self._diag())
        self.shell = wait_for(self._find_shell, timeout, lambda: "remote login shell; " + self._diag())
        return self._connected(timeout, prompt)

    @property
    def sessionid(self) -> Optional[int]:
        return self.shell.sessionid if self.shell else None

    # the client is the session: ssh's names for the shared client methods
    running = TerminalSession.client_running
    exit_status = TerminalSession.client_exit_status
    wait_exit = TerminalSession.wait_client_exit

    def processes(self) -> List[procfs.Proc]:
        """The remote login shell and its live descendants."""
        return self._tree(self.shell)

    def __repr__(self) -> str:
        return f"<SshSession {self.user.name}@{self.sshd.address} shell={self.shell_pid}>"

"""A plain interactive ``ssh -tt`` login running inside a private tmux."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, List, Optional

from . import procfs
from .host import HarnessError
from .mosh import PROMPT_RE
from .tmux import Terminal, TerminalSession
from .waiting import Stopwatch, wait_for

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
        self.sshd = sshd
        self.user = user
        self.state_dir = state_dir
        self.command = command
        self.argv = sshd.ssh_argv(user, command, tty=True)
        self.term = Terminal(state_dir, self.argv, width=width, height=height)
        self.client: Optional[procfs.Proc] = None
        self.shell: Optional[procfs.Proc] = None
        self.sshd_session: Optional[procfs.Proc] = None
        self.local_ip: Optional[str] = None
        self.local_port: Optional[int] = None
        self.connect_seconds: Optional[float] = None

    def start(self) -> "SshSession":
        self._clock = Stopwatch()
        self.term.start()
        return self

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
        if prompt is None and not self.command:
            prompt = PROMPT_RE
        if prompt:
            self.term.wait_screen(prompt, timeout)
        self.connect_seconds = self._clock.elapsed()
        return self

    @property
    def shell_pid(self) -> Optional[int]:
        return self.shell.pid if self.shell else None

    @property
    def client_pid(self) -> Optional[int]:
        return self.client.pid if self.client else None

    @property
    def sessionid(self) -> Optional[int]:
        return self.shell.sessionid if self.shell else None

    def running(self) -> bool:
        return self.client is not None and self.client.alive() and self.term.exit_status() is None

    client_running = running

    def exit_status(self) -> Optional[int]:
        return self.term.exit_status()

    client_exit_status = exit_status

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.term.wait_exit(timeout)

    def kill_client(self) -> None:
        if self.client is None:
            raise HarnessError("session has no client yet")
        procfs.signal_proc(self.client.pid, self.client.starttime, signal.SIGKILL)
        procfs.wait_gone([self.client], 10)
        self.term.wait_exit(10)  # the wrapper has recorded the status (137)

    def processes(self) -> List[procfs.Proc]:
        if self.shell is None or not self.shell.alive():
            return []
        return [self.shell] + [p for p in procfs.descendants(self.shell.pid, proc_root=self.shell.proc_root)
                               if not p.zombie]

    def close(self) -> None:
        self.term.close()

    def __repr__(self) -> str:
        return f"<SshSession {self.user.name}@{self.sshd.address} shell={self.shell_pid}>"

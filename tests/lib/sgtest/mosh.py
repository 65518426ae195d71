"""Real mosh sessions: the ``mosh`` wrapper and ``mosh-client`` run in a private tmux.

The session goes through the test sshd like a user's would, so the
mosh-server daemon carries the login's audit loginuid/sessionid.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, List, Optional, Sequence

from . import procfs, utmp
from .host import HarnessError
from .tmux import TerminalSession
from .waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    from .sshd import Sshd
    from .users import TestUser

MOSH_EXITING = "[mosh is exiting.]"


def install_server_copy(user: "TestUser", rel_path: str = ".cache/x/kworker",
                        source: str = "/usr/bin/mosh-server") -> str:
    """Copy the mosh-server binary into the user's home (owned by the user). Returns the path."""
    return user.install_file(source, rel_path, 0o755)


def spoofed_server(user: "TestUser", rel_path: str = ".cache/x/kworker",
                   argv0: str = "[kworker/0:1]", source: str = "/usr/bin/mosh-server") -> str:
    """Install a renamed mosh-server copy and return the matching ``mosh --server=`` value.

    mosh pastes ``--server`` unquoted in front of ``'new' '-c' ...`` in the remote
    command, which sshd runs with ``bash -c``; so ``exec -a ARGV0 ~/PATH`` makes
    the daemon's comm the file name (``kworker``) and its argv[0] ``ARGV0``.
    """
    install_server_copy(user, rel_path, source)
    return f"exec -a {shlex.quote(argv0)} ~/{rel_path}"


class MoshSession(TerminalSession):
    """One ``mosh user@host`` run inside its own tmux server.

    Lifecycle: ``start()`` then ``wait_connected()`` (the factory does both).
    After connecting, ``server`` / ``shell`` / ``client`` are /proc snapshots
    (pid + start time) and ``port`` the server's UDP port.
    """

    def __init__(self, sshd: "Sshd", user: "TestUser", state_dir: str,
                 command: Optional[Sequence[str]] = None, server: Optional[str] = None,
                 mosh_args: Sequence[str] = (), width: int = 160, height: int = 50) -> None:
        self.server_option = server
        argv = ["mosh", f"--ssh={sshd.ssh_command_string(user)}"]
        if server:
            argv.append(f"--server={server}")
        argv += list(mosh_args)
        argv.append(f"{user.name}@{sshd.address}")
        if command:
            argv += ["--"] + list(command)
        super().__init__(sshd, user, state_dir, list(command) if command else None, argv, width, height,
                         env={"LANG": "C.UTF-8"})
        self.server: Optional[procfs.Proc] = None
        self.port: Optional[int] = None
        self.client_ip: Optional[str] = None

    def _diag(self) -> str:
        return (f"mosh session {self.user.name}: exit={self.term.exit_status()} "
                f"client={self.client} server={self.server}\nscreen:\n{self.term._safe_screen()}\n"
                f"user processes:\n  " + "\n  ".join(str(p) for p in self.user.processes()) +
                f"\nsshd log tail:\n{self.sshd.log_text()[-1200:]}")

    def _find_client(self) -> Optional[procfs.Proc]:
        if self.term.exit_status() is not None:
            raise HarnessError("mosh exited before connecting: " + self._diag())
        c = self.term.find_process("mosh-client")
        if c is None or len(c.cmdline) < 3 or not c.cmdline[-1].isdigit():
            return None
        return c

    def _find_server(self) -> Optional[procfs.Proc]:
        # The daemon is the process holding both the UDP socket and the pty master;
        # the short-lived first process and the pre-exec child hold only the socket.
        for p in self.user.processes():
            if self.port in procfs.udp_ports(p.pid, p.proc_root) and procfs.has_ptmx(p.pid, p.proc_root):
                return p
        return None

    def _find_shell(self) -> Optional[procfs.Proc]:
        """The server's pty child once it has exec'ed (argv differs from the server's)."""
        if self.server is None or not self.server.alive():
            return None
        for c in procfs.children(self.server.pid, proc_root=self.server.proc_root):
            if c.zombie:
                continue
            if c.cmdline and c.cmdline != self.server.cmdline:
                return c
        return None

    def wait_connected(self, timeout: float = 30.0, prompt: Optional[str] = None) -> "MoshSession":
        """Wait for client, server daemon and exec'ed shell; for a login shell also its prompt.

        ``prompt`` is a regex (default: a line ending in ``$``/``#`` when no command was given;
        pass ``""`` to skip the screen check).
        """
        self.client = wait_for(self._find_client, timeout, lambda: "mosh-client; " + self._diag())
        self.port = int(self.client.cmdline[-1])
        self.client_ip = self.client.cmdline[-2]
        self.server = wait_for(self._find_server, timeout,
                               lambda: f"a process of {self.user.name} bound to UDP {self.port}; "
                               + self._diag())
        self.shell = wait_for(self._find_shell, timeout, lambda: "shell exec'ed; " + self._diag())
        return self._connected(timeout, prompt)

    # ------------------------------------------------------------------ the server side
    @property
    def server_pid(self) -> Optional[int]:
        return self.server.pid if self.server else None

    @property
    def sessionid(self) -> Optional[int]:
        return self.server.sessionid if self.server else None

    def utmp_record(self) -> Optional[utmp.UtmpRecord]:
        return utmp.mosh_record(self.server_pid, self.user.host.utmp_path) if self.server else None

    def server_alive(self) -> bool:
        return self.server is not None and self.server.alive()

    def processes(self) -> List[procfs.Proc]:
        """Server daemon plus its live descendants (shell, foreground jobs...)."""
        return self._tree(self.server)

    def __repr__(self) -> str:
        return (f"<MoshSession {self.user.name}@{self.sshd.address} port={self.port} "
                f"server={self.server_pid} shell={self.shell_pid} client={self.client_pid}>")

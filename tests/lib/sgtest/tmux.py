"""A detached terminal: one private tmux server (own socket) running one command.

The command runs inside a wrapper script that records its exit status in a
file, and the tmux server has ``remain-on-exit on`` so the final screen (e.g.
``[mosh is exiting.]``) can still be captured after the command ended.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from typing import TYPE_CHECKING, List, Optional, Pattern, Sequence, Union

from . import procfs, utmp
from .host import HarnessError, user_env
from .waiting import Stopwatch, wait_for

if TYPE_CHECKING:  # pragma: no cover
    from .sshd import Sshd
    from .users import TestUser

TMUX_CONF = """\
set -g remain-on-exit on
set -g status off
set -g history-limit 10000
set -g escape-time 0
set -g default-size {width}x{height}
"""

PROMPT_RE = r"[$#]\s*$"

_sync_counter = [0]


class Terminal:
    """A command running in a private tmux server.

    ``state_dir`` holds the tmux socket, the tmux config, the wrapper script
    and the exit-status file.
    """

    def __init__(self, state_dir: str, argv: Sequence[str], env: Optional[dict] = None,
                 width: int = 160, height: int = 50) -> None:
        self.state_dir = state_dir
        self.argv = list(argv)
        self.env = user_env(env)
        self.width, self.height = width, height
        self.socket = os.path.join(state_dir, "tmux.sock")
        self.conf = os.path.join(state_dir, "tmux.conf")
        self.script = os.path.join(state_dir, "run.sh")
        self.status_file = os.path.join(state_dir, "exit_status")
        self.server: Optional[procfs.Proc] = None
        self.pane: Optional[procfs.Proc] = None
        self.closed = False
        if len(self.socket) > 100:
            raise HarnessError(f"tmux socket path too long: {self.socket}")

    # ------------------------------------------------------------------ tmux plumbing
    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run(["tmux", "-S", self.socket, "-f", self.conf, *args],
                            capture_output=True, text=True, env=self.env, timeout=30, check=False)
        if check and cp.returncode != 0:
            raise HarnessError(f"tmux {args!r} failed ({cp.returncode}): {cp.stderr.strip()}")
        return cp

    def start(self) -> "Terminal":
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        with open(self.conf, "w") as fh:
            fh.write(TMUX_CONF.format(width=self.width, height=self.height))
        with open(self.script, "w") as fh:
            fh.write("#!/bin/bash\n"
                     "cd /\n"
                     f"{' '.join(shlex.quote(a) for a in self.argv)}\n"
                     "rc=$?\n"
                     f"printf '%s\\n' \"$rc\" > {shlex.quote(self.status_file)}.tmp\n"
                     f"mv {shlex.quote(self.status_file)}.tmp {shlex.quote(self.status_file)}\n"
                     "printf '\\n[sgtest: command exited with status %s]\\n' \"$rc\"\n"
                     "exit $rc\n")
        os.chmod(self.script, 0o700)
        self.tmux("new-session", "-d", "-s", "main", "-x", str(self.width), "-y", str(self.height),
                  self.script)
        out = self.tmux("display-message", "-p", "-t", "main", "#{pid} #{pane_pid}").stdout.split()
        spid, ppid = int(out[0]), int(out[1])
        self.server = procfs.read_proc(spid)
        self.pane = procfs.read_proc(ppid)
        if self.server is None:
            raise HarnessError("tmux server vanished right after start")
        if self.pane is None:  # command already finished; keep a placeholder
            self.pane = None
        return self

    # ------------------------------------------------------------------ interaction
    def send_keys(self, *keys: str) -> None:
        """tmux key names, e.g. ``send_keys("C-c")`` or ``send_keys("Enter")``."""
        self.tmux("send-keys", "-t", "main", *keys)

    def type(self, text: str) -> None:
        """Type ``text`` literally (no Enter)."""
        self.tmux("send-keys", "-t", "main", "-l", text)

    def send_line(self, line: str) -> None:
        """Type ``line`` and press Enter."""
        self.type(line)
        self.send_keys("Enter")

    def send(self, text: str) -> None:
        """Alias of :meth:`send_line` (type a command line and press Enter)."""
        self.send_line(text)

    def screen(self, history: bool = False) -> str:
        """Current pane text (joined wrapped lines; with scroll-back if ``history``)."""
        args = ["capture-pane", "-p", "-J", "-t", "main"]
        if history:
            args += ["-S", "-"]
        cp = self.tmux(*args, check=False)
        if cp.returncode != 0:
            raise HarnessError(f"capture-pane failed: {cp.stderr.strip()} (tmux server gone?)")
        return cp.stdout

    def wait_screen(self, pattern: Union[str, Pattern[str]], timeout: float = 15.0,
                    history: bool = True) -> "re.Match[str]":
        """Wait until the screen matches ``pattern`` (a regex, MULTILINE); return the match."""
        rx = re.compile(pattern, re.M) if isinstance(pattern, str) else pattern
        last = [""]

        def _check():
            last[0] = self.screen(history=history)
            return rx.search(last[0])

        return wait_for(_check, timeout, lambda: f"screen to match {rx.pattern!r}; screen was:\n"
                        + last[0].rstrip())

    def sync(self, timeout: float = 15.0) -> None:
        """Type a printf whose *output* differs from its echo, and wait for the output.

        When it returns, the shell has run every line typed before.
        """
        _sync_counter[0] += 1
        n = f"{os.getpid()}x{_sync_counter[0]}"
        self.send_line(f"printf '%s_%s\\n' SGSYNC {n}")
        self.wait_screen(rf"^SGSYNC_{n}\s*$", timeout)

    # ------------------------------------------------------------------ state
    def exit_status(self) -> Optional[int]:
        """Exit status of the wrapped command, or None while it runs."""
        try:
            with open(self.status_file) as fh:
                return int(fh.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        return self.exit_status() is None and self.pane is not None and self.pane.alive()

    def wait_exit(self, timeout: float = 15.0) -> int:
        wait_for(lambda: self.exit_status() is not None, timeout,
                 lambda: "terminal command to exit; screen:\n" + self._safe_screen())
        return self.exit_status()  # type: ignore[return-value]

    def _safe_screen(self) -> str:
        try:
            return self.screen(history=True).rstrip()
        except HarnessError as exc:
            return f"<{exc}>"

    def processes(self) -> List[procfs.Proc]:
        """Live processes under the pane (wrapper script and its descendants)."""
        if self.pane is None or not self.pane.alive():
            return []
        return [self.pane] + [p for p in procfs.descendants(self.pane.pid) if not p.zombie]

    def find_process(self, comm: str) -> Optional[procfs.Proc]:
        for p in self.processes():
            if p.comm == comm:
                return p
        return None

    # ------------------------------------------------------------------ teardown
    def close(self, timeout: float = 10.0) -> None:
        """SIGKILL everything under the pane, then the tmux server, all by PID; verify."""
        if self.closed:
            return
        doomed = self.processes()[::-1]
        procfs.kill_procs(doomed, signal.SIGKILL)
        if self.server is not None and self.server.alive():
            self.tmux("kill-server", check=False)
            try:
                wait_for(lambda: not self.server.alive(), 3, "tmux server to exit")
            except AssertionError:
                procfs.signal_proc(self.server.pid, self.server.starttime, signal.SIGKILL)
        procfs.wait_gone(doomed + ([self.server] if self.server else []), timeout)
        if self.server is not None:  # a SIGKILLed tmux leaves its panes' utmp records behind
            tag = f"tmux({self.server.pid})."
            utmp.retire_records(lambda r: r.host.startswith(tag))
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass
        self.closed = True


class TerminalSession:
    """A client (``mosh`` or ``ssh``) running in its own :class:`Terminal` (``self.term``), logged in as
    ``user`` through ``sshd``: typing into it, reading its screen, and what both kinds share.

    Once connected, ``client`` is the local client process and ``shell`` the remote shell.
    """

    def __init__(self, sshd: "Sshd", user: "TestUser", state_dir: str, command: object, argv: Sequence[str],
                 width: int, height: int, env: Optional[dict] = None) -> None:
        self.sshd = sshd
        self.user = user
        self.state_dir = state_dir
        self.command = command
        self.argv = list(argv)
        self.term = Terminal(state_dir, self.argv, env=env, width=width, height=height)
        self.client: Optional[procfs.Proc] = None
        self.shell: Optional[procfs.Proc] = None
        self.connect_seconds: Optional[float] = None

    def start(self):
        self._clock = Stopwatch()
        self.term.start()
        return self

    def _connected(self, timeout: float, prompt: Optional[str]):
        """Wait for a login shell's prompt (``prompt``: a regex, default a line ending in ``$``/``#``
        when no command was given; ``""`` skips the check), then note the time it took."""
        if prompt is None and not self.command:
            prompt = PROMPT_RE
        if prompt:
            self.term.wait_screen(prompt, timeout)
        self.connect_seconds = self._clock.elapsed()
        return self

    # ------------------------------------------------------------------ typing and reading
    def send(self, line: str) -> None:
        """Type ``line`` + Enter into the remote shell."""
        self.term.send_line(line)

    send_line = send

    def type(self, text: str) -> None:
        self.term.type(text)

    def send_keys(self, *keys: str) -> None:
        self.term.send_keys(*keys)

    def screen(self, history: bool = False) -> str:
        return self.term.screen(history)

    def wait_screen(self, pattern, timeout: float = 15.0):
        return self.term.wait_screen(pattern, timeout)

    def sync(self, timeout: float = 15.0) -> None:
        """Return once the remote shell has executed everything typed so far."""
        self.term.sync(timeout)

    # ------------------------------------------------------------------ the client
    @property
    def client_pid(self) -> Optional[int]:
        return self.client.pid if self.client else None

    def client_running(self) -> bool:
        return self.client is not None and self.client.alive() and self.term.exit_status() is None

    def client_exit_status(self) -> Optional[int]:
        """Exit status of the client command (None while it still runs)."""
        return self.term.exit_status()

    def wait_client_exit(self, timeout: float = 15.0) -> int:
        return self.term.wait_exit(timeout)

    def kill_client(self) -> None:
        """SIGKILL only the client (a vanished laptop): the server side keeps waiting."""
        if self.client is None:
            raise HarnessError("session has no client yet")
        procfs.signal_proc(self.client.pid, self.client.starttime, signal.SIGKILL)
        procfs.wait_gone([self.client], 10)
        self.term.wait_exit(10)  # the wrapper has recorded the status (137)

    @property
    def shell_pid(self) -> Optional[int]:
        return self.shell.pid if self.shell else None

    @staticmethod
    def _tree(top: Optional[procfs.Proc]) -> List[procfs.Proc]:
        """``top`` and its live descendants, in the procfs it was read from ([] once it is gone)."""
        if top is None or not top.alive():
            return []
        return [top] + [p for p in procfs.descendants(top.pid, proc_root=top.proc_root) if not p.zombie]

    def close(self) -> None:
        """Kill the client side (tmux server and everything in it). The user's side is
        cleaned by user teardown."""
        self.term.close()

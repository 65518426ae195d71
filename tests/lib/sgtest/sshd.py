"""A dedicated sshd for tests: own config, own host key, own PID file, key auth only.

It runs with ``UsePAM yes`` so Debian's /etc/pam.d/sshd runs ``pam_loginuid``:
every login through it gets a real /proc/PID/loginuid and sessionid.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING, List, Optional, Sequence

from . import procfs
from .host import SSHD_BINARY, HarnessError, Host, user_env

if TYPE_CHECKING:  # pragma: no cover
    from .users import TestUser

DEFAULT_PORTS = range(2222, 2300)


def port_free(address: str, port: int) -> bool:
    """Nothing listens on ``address:port`` (TCP)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def banner(address: str, port: int) -> bool:
    """An SSH server answers on ``address:port`` (its first bytes are ``SSH-``)."""
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def sshd_config(address: str, port: int, host_key: str, pid_file: str, keys_dir: str,
                log_level: str = "VERBOSE", extra: Sequence[str] = (), first: Sequence[str] = ()) -> str:
    """The configuration of every test sshd: key logins only, through PAM (so ``pam_loginuid`` gives
    each login its audit session), on one loopback address. ``keys_dir/%u`` is read besides
    ``~/.ssh/authorized_keys``. StrictModes is off because that directory may sit below /tmp, whose
    world-writable mode would make sshd refuse every key in it. sshd keeps the first value it reads for
    a keyword: ``first`` lines (an ``Include``, a setting that must win) come before these, ``extra``
    lines after."""
    lines = [
        f"Port {port}",
        f"ListenAddress {address}",
        "AddressFamily inet",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        "UsePAM yes",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        f"AuthorizedKeysFile .ssh/authorized_keys {keys_dir}/%u",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        "LoginGraceTime 30",
        "AcceptEnv LANG LC_*",
        f"LogLevel {log_level}",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ]
    return "\n".join(list(first) + lines + list(extra)) + "\n"


class Sshd:
    """One sshd listening on ``address:port`` of ``host``.

    ``state_dir`` receives the config, host key, PID file, log and an extra
    authorized_keys directory (``authorized_keys/<user>``, used for root or
    other accounts whose home we do not want to touch; see :meth:`authorize`).
    It is a path on ``host`` (for a namespaced host the test process reaches it
    through ``host.path()``), and ``pid`` is the PID the host sees.
    """

    def __init__(self, host: Host, state_dir: str, port: Optional[int] = None,
                 address: Optional[str] = None, extra_config: Sequence[str] = (),
                 log_level: str = "VERBOSE", first_config: Sequence[str] = ()) -> None:
        self.host = host
        self.address = address or host.address
        self.requested_port = port
        self.port: Optional[int] = None
        self.state_dir = state_dir
        self.extra_config = list(extra_config)
        self.first_config = list(first_config)
        self.log_level = log_level
        self.proc: Optional[subprocess.Popen] = None
        self.pid: Optional[int] = None
        self.starttime: Optional[int] = None
        self.config_path = os.path.join(state_dir, "sshd_config")
        self.host_key = os.path.join(state_dir, "ssh_host_ed25519_key")
        self.pid_file = os.path.join(state_dir, "sshd.pid")
        self.log_path = os.path.join(state_dir, "sshd.log")
        self.keys_dir = os.path.join(state_dir, "authorized_keys")

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> "Sshd":
        if self.proc is not None:
            raise HarnessError("sshd already started")
        self.host.prepare()
        here = self.host.path
        os.makedirs(here(self.state_dir), mode=0o700, exist_ok=True)
        os.makedirs(here(self.keys_dir), mode=0o755, exist_ok=True)
        if not os.path.exists(here(self.host_key)):
            self.host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sgtest-host",
                           "-f", self.host_key])
        ports: Sequence[int] = [self.requested_port] if self.requested_port else DEFAULT_PORTS
        errors: List[str] = []
        for port in ports:
            if not port_free(self.address, port):
                errors.append(f"{port}: in use")
                continue
            with open(here(self.config_path), "w") as fh:
                fh.write(sshd_config(self.address, port, self.host_key, self.pid_file, self.keys_dir,
                                     self.log_level, self.extra_config, self.first_config))
            self.host.run([SSHD_BINARY, "-t", "-f", self.config_path])
            for stale in (self.log_path, self.pid_file):
                if os.path.exists(here(stale)):
                    os.unlink(here(stale))
            proc = self.host.spawn([SSHD_BINARY, "-D", "-f", self.config_path, "-E", self.log_path],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True,
                                   env=user_env())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                pid = self._spawned_pid(proc)
                if pid and self._listening(pid, port, self.host.proc_root) and banner(self.address, port):
                    self.proc, self.pid, self.port = proc, pid, port
                    self.starttime = procfs.starttime(pid, self.host.proc_root)
                    return self
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            errors.append(f"{port}: sshd exited {proc.returncode}: {self.log_text()[-500:]}")
            if self.requested_port:
                break
        raise HarnessError("could not start sshd:\n" + "\n".join(errors))

    def _spawned_pid(self, proc: subprocess.Popen) -> Optional[int]:
        """The sshd's PID as the host sees it: the Popen's own PID on the local host, else
        (the Popen is ``nsenter``) the PID sshd wrote to its PidFile."""
        if self.host.proc_root == procfs.PROC:
            return proc.pid
        try:
            with open(self.host.path(self.pid_file)) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _listening(pid: int, port: int, proc_root: str = procfs.PROC) -> bool:
        """True if *our* process (not some other sshd) holds the listening socket."""
        return any(p == port for _ip, p, _ino in procfs.inet_sockets(pid, "tcp", proc_root))

    def running(self) -> bool:
        return self.pid is not None and procfs.alive(self.pid, self.starttime, self.host.proc_root)

    def session_processes(self) -> List[procfs.Proc]:
        """Per-connection sshd processes (and their children) still hanging off the listener."""
        if not self.running():
            return []
        return procfs.descendants(self.pid, proc_root=self.host.proc_root)  # type: ignore[arg-type]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the listener and every per-connection child of it, by PID (never by name)."""
        if self.proc is None:
            return
        doomed = self.session_processes()
        procfs.kill_procs(doomed, signal.SIGKILL)
        if self.proc.poll() is None:
            if self.host.proc_root == procfs.PROC:
                self.proc.terminate()
            elif self.running():  # the Popen is nsenter: signal sshd itself, by PID in its namespace
                procfs.signal_proc(self.pid, self.starttime, signal.SIGTERM, self.host.proc_root)  # type: ignore[arg-type]
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.running():
                    procfs.signal_proc(self.pid, self.starttime, signal.SIGKILL,  # type: ignore[arg-type]
                                       self.host.proc_root)
                self.proc.kill()
                self.proc.wait(timeout)
        procfs.wait_gone(doomed, timeout)
        self.proc = None

    # ------------------------------------------------------------------ use
    def log_text(self) -> str:
        try:
            with open(self.host.path(self.log_path), errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def run(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """Run a command as root on this sshd's host (not through ssh)."""
        return self.host.run(argv, **kw)

    def authorize(self, username: str, pubkey: str) -> str:
        """Allow ``pubkey`` for ``username`` via the state-dir keys file (not ~/.ssh)."""
        path = os.path.join(self.keys_dir, username)
        local = self.host.path(path)
        with open(local, "a") as fh:
            fh.write(pubkey.strip() + "\n")
        os.chmod(local, 0o644)
        return path

    def ssh_options(self, key_path: str) -> List[str]:
        """ssh client options (after ``ssh``) that reach this sshd with ``key_path`` only."""
        return [
            "-F", "none",
            "-p", str(self.port),
            "-i", key_path,
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10",
        ]

    def ssh_argv(self, user: "TestUser", command: Optional[str] = None, tty: bool = False) -> List[str]:
        argv = ["ssh"] + self.ssh_options(user.key_path)
        if tty:
            argv.append("-tt")
        argv.append(f"{user.name}@{self.address}")
        if command is not None:
            argv += ["--", command]
        return argv

    def ssh_command_string(self, user: "TestUser") -> str:
        """The value for ``mosh --ssh=...`` (mosh splits it with Perl shellwords)."""
        return " ".join(shlex.quote(a) for a in ["ssh"] + self.ssh_options(user.key_path))

    def run_as(self, user: "TestUser", command: str, *, check: bool = True,
               timeout: float = 30, input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run ``command`` as ``user`` through a real (non-interactive) ssh login."""
        argv = self.ssh_argv(user, command)
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                            input=input, env=user_env(),
                            stdin=None if input is not None else subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise HarnessError(f"ssh {user.name}@{self.address}:{self.port} {command!r} exited "
                               f"{cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}\n"
                               f"sshd log tail:\n{self.log_text()[-1500:]}")
        return cp

    def audit_ids(self, user: "TestUser") -> tuple:
        """(loginuid, sessionid) of a shell opened by a fresh ssh login of ``user``."""
        out = self.run_as(user, "cat /proc/self/loginuid; echo; cat /proc/self/sessionid; echo").stdout
        a, b = out.split()[:2]
        return int(a), int(b)

    def __repr__(self) -> str:
        return f"<Sshd {self.address}:{self.port} pid={self.pid}>"

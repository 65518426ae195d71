"""Ties the pieces together: one Harness per test run, one Scope per fixture scope.

Everything created goes under one state directory and is registered, so
teardown can kill it by PID/UID and then *verify* nothing is left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import List, Optional, Sequence

from . import procfs
from .bystander import Bystander, make_bystander
from .host import HarnessError, Host, LocalHost
from .mosh import MoshSession
from .ssh import SshSession
from .sshd import Sshd
from .users import OWNER_TAG, TestUser, UserFactory, owner_alive, owner_tag

STATE_PREFIX = "sgtest-"


class Scope:
    """Users and sessions made for one fixture scope (a test, a module...)."""

    def __init__(self, harness: "Harness", name: str) -> None:
        self.harness = harness
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"{_short(name)}-", dir=harness.state_dir)
        self.users = UserFactory(harness.host, os.path.join(self.dir, "keys"))
        self.sessions: List[object] = []
        self._n = 0
        self.cleaned = False
        harness.scopes.append(self)

    @property
    def sshd(self) -> Sshd:
        return self.harness.sshd

    def _session_dir(self, kind: str) -> str:
        self._n += 1
        d = os.path.join(self.dir, f"{kind}{self._n}")
        os.makedirs(d, mode=0o700)
        return d

    def user(self, prefix: Optional[str] = None, shell: str = "/bin/bash", authorize: bool = True) -> TestUser:
        u = self.users.create(prefix=prefix, shell=shell, authorize=authorize)
        self.harness.all_users.append(u)
        return u

    def mosh(self, user: TestUser, command: Optional[Sequence[str]] = None, server: Optional[str] = None,
             mosh_args: Sequence[str] = (), wait: bool = True, timeout: float = 30.0,
             sshd: Optional[Sshd] = None) -> MoshSession:
        s = MoshSession(sshd or self.sshd, user, self._session_dir("mosh"), command=command,
                        server=server, mosh_args=mosh_args)
        self.sessions.append(s)
        s.start()
        if wait:
            s.wait_connected(timeout)
        return s

    def ssh(self, user: TestUser, command: Optional[str] = None, wait: bool = True,
            timeout: float = 30.0, sshd: Optional[Sshd] = None) -> SshSession:
        s = SshSession(sshd or self.sshd, user, self._session_dir("ssh"), command=command)
        self.sessions.append(s)
        s.start()
        if wait:
            s.wait_connected(timeout)
        return s

    def bystander(self) -> Bystander:
        u = self.user(prefix="sgb")
        return make_bystander(u, self.mosh(u))

    def cleanup(self) -> None:
        """Close client sides, destroy users (kill by UID, userdel), verify. Raises on leaks."""
        if self.cleaned:
            return
        self.cleaned = True
        errors: List[str] = []
        for s in reversed(self.sessions):
            try:
                s.close()  # type: ignore[attr-defined]
            except Exception as exc:
                errors.append(f"closing {s!r}: {exc}")
        errors += self.users.cleanup()
        errors += self.harness.leaks(self.users.users, self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise HarnessError(f"teardown of {self.name} left things behind:\n  " + "\n  ".join(errors))


def _short(name: str) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in name)
    return keep[-24:] or "scope"


class Harness:
    """One per test run: the host, the state directory and the sshd."""

    def __init__(self, host: Optional[Host] = None, state_dir: Optional[str] = None) -> None:
        self.host = host or LocalHost()
        self.state_dir = state_dir or tempfile.mkdtemp(prefix=STATE_PREFIX, dir="/tmp")
        os.chmod(self.state_dir, 0o711)
        with open(os.path.join(self.state_dir, "owner"), "w") as fh:
            fh.write(owner_tag() + "\n")
        self.sshd: Optional[Sshd] = None  # type: ignore[assignment]
        self.all_users: List[TestUser] = []
        self.scopes: List[Scope] = []

    def start(self) -> "Harness":
        self.host.preflight()
        self.host.prepare()
        self.purged = purge_stale(self.host)
        self.sshd = Sshd(self.host, os.path.join(self.state_dir, "sshd")).start()
        return self

    def scope(self, name: str) -> Scope:
        if self.sshd is None:
            raise HarnessError("harness not started")
        return Scope(self, name)

    def leaks(self, users: Sequence[TestUser] = (), path: Optional[str] = None) -> List[str]:
        """What is still around: processes of ``users``, their accounts/homes, and any
        process whose argv mentions ``path`` (default: the whole state dir)."""
        path = path or self.state_dir
        out: List[str] = []
        for u in users:
            for p in procfs.procs_of_uid(u.uid, proc_root=self.host.proc_root):
                out.append(f"process of {u.name}: {p}")
            if u.account_exists():
                out.append(f"account {u.name} still exists")
            if os.path.exists(u.host.path(u.home)):
                out.append(f"home {u.home} still exists")
        me = os.getpid()
        for p in procfs.iter_procs(self.host.proc_root):
            if p.pid != me and not p.zombie and any(path in a for a in p.cmdline):
                out.append(f"process mentioning {path}: {p}")
        return out

    def finish(self) -> None:
        """Stop sshd, verify nothing of this run survives, remove the state dir."""
        errors: List[str] = []
        for scope in reversed(self.scopes):
            try:
                scope.cleanup()
            except Exception as exc:
                errors.append(str(exc))
        leftover_users = [u for u in self.all_users if not u.destroyed]
        for u in leftover_users:
            try:
                u.destroy()
            except Exception as exc:
                errors.append(f"{u!r}: {exc}")
        if self.sshd is not None:
            try:
                self.sshd.stop()
            except Exception as exc:
                errors.append(f"stopping sshd: {exc}")
            if self.sshd.running():
                errors.append(f"sshd {self.sshd.pid} still running")
        errors += self.leaks(self.all_users)
        if not errors:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if errors:
            raise HarnessError("harness teardown left things behind (state dir kept: "
                               f"{self.state_dir}):\n  " + "\n  ".join(errors))


def purge_stale(host: Host, tmp: str = "/tmp") -> List[str]:
    """Remove what a crashed earlier run left: users tagged ``sgtest owner PID/START`` (GECOS) and
    ``/tmp/sgtest-*`` state dirs (and processes mentioning them) whose owner process is
    dead. Anything whose owner still runs (a concurrent test run) is left alone."""
    done: List[str] = []
    for entry in os.listdir(tmp):
        path = os.path.join(tmp, entry)
        if not entry.startswith(STATE_PREFIX) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, "owner")) as fh:
                tag = fh.read().strip()
        except OSError:
            continue
        if owner_alive(tag):
            continue
        procs = [p for p in procfs.iter_procs(host.proc_root)
                 if not p.zombie and any(path + "/" in a for a in p.cmdline)]
        procfs.kill_procs(procs)
        procfs.wait_gone(procs)
        shutil.rmtree(path, ignore_errors=True)
        done.append(f"state dir {path} ({len(procs)} processes)")
    cp = host.run(["getent", "passwd"], check=False)
    for line in cp.stdout.splitlines():
        f = line.split(":")
        if len(f) < 7 or not f[4].startswith(OWNER_TAG) or owner_alive(f[4]):
            continue
        user = TestUser(host, f[0], int(f[2]), int(f[3]), f[5], "", f[6])
        user.destroy()
        done.append(f"user {f[0]} (uid {f[2]})")
    return done

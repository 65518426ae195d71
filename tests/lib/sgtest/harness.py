"""Where tests make users and sessions: a set of hosts with a state directory.

:class:`BaseFleet` is what every such set has: hosts found by name, address or index, scopes that
create and destroy users on them, and the check that nothing of those users is left.
:class:`Harness` is the machine itself as a fleet of one host, with a test sshd on 127.0.0.1;
:class:`sgtest.fleet.Fleet` is a fleet of namespaced hosts (tests/fleet/README.md).

Everything created goes under one state directory and is registered, so teardown can kill it by
PID/UID and then *verify* nothing is left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from . import procfs
from .host import HarnessError, Host, LocalHost
from .scope import Scope
from .sshd import Sshd
from .users import OWNER_TAG, UID_RANGE, HostRef, TestUser, owner_alive, owner_tag

STATE_PREFIX = "sgtest-"


class BaseFleet:
    """Hosts and the scopes working on them (see the module doc)."""

    uid_range: Tuple[int, int] = UID_RANGE
    user_prefix = "sgt"

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.hosts: List[Host] = []
        self.scopes: List[Scope] = []
        self._default_scope: Optional[Scope] = None

    # ------------------------------------------------------------------ hosts
    def host(self, which: HostRef) -> Host:
        """By host object, name (``sghost03``), address or 1-based fleet index."""
        for h in self.hosts:
            if which is h or which in (h.name, h.address, getattr(h, "index", None)):
                return h
        raise KeyError(f"no host {which!r} ({', '.join(h.name for h in self.hosts) or 'no hosts up'})")

    __getitem__ = host

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def resolve(self, hosts: Optional[Iterable[HostRef]]) -> List[Host]:
        """``hosts`` as host objects; None means every host."""
        return list(self.hosts) if hosts is None else [self.host(h) for h in hosts]

    # ------------------------------------------------------------------ scopes
    @property
    def scopes_dir(self) -> str:
        path = os.path.join(self.state_dir, "scopes")
        os.makedirs(path, mode=0o711, exist_ok=True)
        return path

    def scope(self, name: str) -> Scope:
        """A :class:`Scope`: users and sessions torn down (and verified) together."""
        return Scope(self, name)

    @property
    def default_scope(self) -> Scope:
        """The scope of :meth:`create_user`, :meth:`mosh` and :meth:`ssh`: for scripts (the demo),
        whose users and sessions last until the fleet goes down."""
        if self._default_scope is None:
            self._default_scope = self.scope("default")
        return self._default_scope

    def create_user(self, name: Optional[str] = None, hosts: Optional[Iterable[HostRef]] = None, **kw) -> TestUser:
        return self.default_scope.user(name, hosts, **kw)

    def mosh(self, user: TestUser, host: Optional[HostRef] = None, **kw):
        return self.default_scope.mosh(user, host, **kw)

    def ssh(self, user: TestUser, host: Optional[HostRef] = None, **kw):
        return self.default_scope.ssh(user, host, **kw)

    # ------------------------------------------------------------------ verification
    def leaks(self, users: Sequence[TestUser] = (), path: Optional[str] = None) -> List[str]:
        """What is still around: processes of ``users`` on their hosts, their accounts and homes,
        and any process on the machine (but this one and its parents) whose argv mentions ``path``
        (default: the whole state dir)."""
        path = path or self.state_dir
        out: List[str] = []
        hosts = [h for h in self.hosts if h.alive()]
        uids = {u.uid: u for u in users}
        for h in hosts:
            for p in procfs.iter_procs(h.proc_root):
                if not p.zombie and set(p.uids[:3]) & set(uids):
                    out.append(f"process on {h.name}: {p}")
        for u in users:
            for h in u.hosts:
                if h in hosts and u.on(h).account_exists():
                    out.append(f"account {u.name} still exists on {h.name}")
                if h in hosts and os.path.exists(h.path(u.home)):
                    out.append(f"home {u.home} still exists on {h.name}")
        spare = procfs.ancestors(os.getpid())
        for p in procfs.iter_procs():
            if p.pid not in spare and not p.zombie and any(path in a for a in p.cmdline):
                out.append(f"process mentioning {path}: {p}")
        return out

    def all_users(self) -> List[TestUser]:
        return [u for s in self.scopes for u in s.users]


class Harness(BaseFleet):
    """One per test run: the machine itself as a fleet of one host, with a test sshd on
    127.0.0.1 (the first free port from 2222) and a state directory ``/tmp/sgtest-*``."""

    def __init__(self, host: Optional[Host] = None, state_dir: Optional[str] = None) -> None:
        super().__init__(state_dir or tempfile.mkdtemp(prefix=STATE_PREFIX, dir="/tmp"))
        self.hosts = [host or LocalHost()]
        os.chmod(self.state_dir, 0o711)
        with open(os.path.join(self.state_dir, "owner"), "w") as fh:
            fh.write(owner_tag() + "\n")
        self.purged: List[str] = []

    @property
    def sshd(self) -> Sshd:
        return self.hosts[0].sshd  # type: ignore[return-value]

    def start(self) -> "Harness":
        host = self.hosts[0]
        host.preflight()
        host.prepare()
        self.purged = purge_stale(host)
        host.sshd = Sshd(host, os.path.join(self.state_dir, "sshd")).start()
        return self

    def scope(self, name: str) -> Scope:
        if self.sshd is None:
            raise HarnessError("harness not started")
        return super().scope(name)

    def finish(self) -> None:
        """Stop sshd, verify nothing of this run survives, remove the state dir."""
        errors: List[str] = []
        for scope in reversed(self.scopes):
            try:
                scope.cleanup()
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(str(exc))
        for u in self.all_users():
            if not u.destroyed:
                try:
                    u.destroy()
                except Exception as exc:  # pylint: disable=broad-except
                    errors.append(f"{u!r}: {exc}")
        sshd = self.sshd
        if sshd is not None:
            try:
                sshd.stop()
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(f"stopping sshd: {exc}")
            if sshd.running():
                errors.append(f"sshd {sshd.pid} still running")
        errors += self.leaks(self.all_users())
        if errors:
            raise HarnessError("harness teardown left things behind (state dir kept: "
                               f"{self.state_dir}):\n  " + "\n  ".join(errors))
        shutil.rmtree(self.state_dir, ignore_errors=True)


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
        TestUser(host, f[0], int(f[2]), int(f[3]), f[5], "", f[6]).destroy()
        done.append(f"user {f[0]} (uid {f[2]})")
    return done

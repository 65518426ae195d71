"""Users and sessions on the fleet that are torn down (and verified) together, like sgtest.Scope."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Union

from sgtest import procfs
from sgtest.bystander import Bystander, make_bystander
from sgtest.host import HarnessError
from sgtest.mosh import MoshSession
from sgtest.ssh import SshSession
from sgtest.users import TestUser

from .fleet import _ancestors
from .users import FleetUser

if TYPE_CHECKING:  # pragma: no cover
    from .fleet import Fleet, FleetHost

HostRef = Union[int, str, "FleetHost"]


def _short(name: str, keep: int = 16) -> str:
    s = "".join(c if c.isalnum() else "_" for c in name)
    return s[-keep:] or "scope"


class FleetScope:
    """``user()``, ``mosh()``, ``ssh()``, ``bystander()`` on fleet hosts; ``cleanup()`` closes
    the client sides (tmux, mosh-client, ssh) by PID, destroys the users on every host and
    verifies that nothing of them is left (raises :class:`sgtest.HarnessError` otherwise).

    Clients run on the machine itself (the "laptops"), in private tmux servers, and connect
    to the host's sshd on 127.0.0.N:22; servers, shells and escapees run inside the host.
    """

    def __init__(self, fleet: "Fleet", name: str) -> None:
        self.fleet = fleet
        self.name = name
        base = os.path.join(fleet.state_dir, "scopes")
        os.makedirs(base, mode=0o700, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=f"{_short(name)}-", dir=base)
        self.users: List[FleetUser] = []
        self.sessions: List[object] = []
        self._n = 0
        self.cleaned = False
        fleet.scopes.append(self)

    def _session_dir(self, kind: str) -> str:
        self._n += 1
        d = os.path.join(self.dir, f"{kind}{self._n}")
        os.makedirs(d, mode=0o700)
        return d

    @staticmethod
    def _member(user: Union[FleetUser, TestUser], host: Optional[HostRef]) -> TestUser:
        if isinstance(user, FleetUser):
            if host is None:
                if len(user.members) != 1:
                    raise HarnessError(f"{user!r} exists on several hosts: say which (host=...)")
                return next(iter(user.members.values()))
            return user.on(host)
        if host is not None and user.host is not user.host.fleet.host(host):  # type: ignore[attr-defined]
            raise HarnessError(f"{user!r} lives on {user.host.name}, not {host}")
        return user

    # ------------------------------------------------------------------ factories
    def user(self, name: Optional[str] = None, hosts: Optional[Iterable[HostRef]] = None, *,
             prefix: str = "sgf", shell: str = "/bin/bash", authorize: bool = True) -> FleetUser:
        """A user on ``hosts`` (default: all), destroyed with the scope."""
        u = self.fleet.create_user(name, hosts, prefix=prefix, shell=shell, authorize=authorize)
        self.users.append(u)
        return u

    def mosh(self, user: Union[FleetUser, TestUser], host: Optional[HostRef] = None, *,
             command: Optional[Sequence[str]] = None, server: Optional[str] = None, mosh_args: Sequence[str] = (),
             wait: bool = True, timeout: float = 30.0) -> MoshSession:
        """``mosh user@127.0.0.N`` (through the host's sshd), connected unless ``wait=False``."""
        tu = self._member(user, host)
        s = MoshSession(tu.host.sshd, tu, self._session_dir("mosh"), command=command,  # type: ignore[attr-defined]
                        server=server, mosh_args=mosh_args)
        self.sessions.append(s)
        s.start()
        if wait:
            s.wait_connected(timeout)
        return s

    def ssh(self, user: Union[FleetUser, TestUser], host: Optional[HostRef] = None, *,
            command: Optional[str] = None, wait: bool = True, timeout: float = 30.0) -> SshSession:
        """An interactive ``ssh -tt user@127.0.0.N [command]`` in tmux."""
        tu = self._member(user, host)
        s = SshSession(tu.host.sshd, tu, self._session_dir("ssh"), command=command)  # type: ignore[attr-defined]
        self.sessions.append(s)
        s.start()
        if wait:
            s.wait_connected(timeout)
        return s

    def bystander(self, host: HostRef, prefix: str = "sgb") -> Bystander:
        """A user with an account on ``host`` only, a live mosh session and a nohup job there."""
        u = self.user(hosts=[host], prefix=prefix)
        tu = u.on(host)
        return make_bystander(tu, self.mosh(tu))

    # ------------------------------------------------------------------ teardown
    def close_sessions(self) -> List[str]:
        errors = []
        for s in reversed(self.sessions):
            try:
                s.close()  # type: ignore[attr-defined]
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(f"closing {s!r}: {exc}")
        return errors

    def leaks(self) -> List[str]:
        out = []
        for u in self.users:
            for tu in u.members.values():
                h = tu.host
                if not h.alive():  # type: ignore[attr-defined]
                    continue
                for p in procfs.procs_of_uid(u.uid, proc_root=h.proc_root):
                    out.append(f"process of {u.name} on {h.name}: {p}")
                if tu.account_exists():
                    out.append(f"account {u.name} still exists on {h.name}")
                if os.path.exists(h.path(tu.home)):
                    out.append(f"home {tu.home} still exists on {h.name}")
        spare = _ancestors(os.getpid())
        for p in procfs.iter_procs():
            if p.pid not in spare and not p.zombie and any(self.dir in a for a in p.cmdline):
                out.append(f"process mentioning {self.dir}: {p}")
        return out

    def cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        errors = self.close_sessions()
        for u in reversed(self.users):
            errors += u.destroy()
        errors += self.leaks()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self in self.fleet.scopes:
            self.fleet.scopes.remove(self)
        if errors:
            raise HarnessError(f"teardown of fleet scope {self.name} left things behind:\n  " + "\n  ".join(errors))

    def __repr__(self) -> str:
        return f"<FleetScope {self.name} users={len(self.users)} sessions={len(self.sessions)}>"

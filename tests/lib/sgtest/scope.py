"""Users and sessions made for one fixture scope (a test, a module...), torn down and verified together."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence

from .bystander import Bystander, make_bystander
from .host import HarnessError
from .mosh import MoshSession
from .ssh import SshSession
from .users import HostRef, TestUser, create_user

if TYPE_CHECKING:  # pragma: no cover
    from .harness import BaseFleet
    from .sshd import Sshd


class Scope:
    """``user()``, ``mosh()``, ``ssh()``, ``bystander()`` on the hosts of ``fleet`` (the machine itself,
    or the namespaced fleet); ``cleanup()`` closes the client sides (tmux, mosh-client, ssh) by PID,
    destroys the users on every host and verifies that nothing of them is left (raises
    :class:`HarnessError` otherwise).

    Clients run on the machine itself (the "laptops"), in private tmux servers, and log in through
    the host's sshd; servers, shells and escapees run on the host.
    """

    def __init__(self, fleet: "BaseFleet", name: str) -> None:
        self.fleet = fleet
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"{_short(name)}-", dir=fleet.scopes_dir)
        self.users: List[TestUser] = []
        self.sessions: List[object] = []
        self._n = 0
        self.cleaned = False
        fleet.scopes.append(self)

    def session_dir(self, kind: str) -> str:
        """A new private directory for one client (its tmux socket, screen, exit status)."""
        self._n += 1
        d = os.path.join(self.dir, f"{kind}{self._n}")
        os.makedirs(d, mode=0o700)
        return d

    # ------------------------------------------------------------------ factories
    def user(self, name: Optional[str] = None, hosts: Optional[Iterable[HostRef]] = None, *,
             prefix: Optional[str] = None, shell: str = "/bin/bash", authorize: bool = True,
             uid: Optional[int] = None) -> TestUser:
        """A new user on ``hosts`` (default: every host of the fleet), destroyed with the scope.
        ``name`` may be one that only ``useradd --badname`` takes (``Bob.Smith@corp.example``)."""
        u = create_user(self.fleet.resolve(hosts), os.path.join(self.dir, "keys"), name=name,
                        prefix=prefix or self.fleet.user_prefix, shell=shell, authorize=authorize, uid=uid,
                        uid_range=self.fleet.uid_range, known_hosts=self.fleet.hosts)
        self.users.append(u)
        return u

    def _start(self, session, wait: bool, timeout: float):
        self.sessions.append(session)
        session.start()
        if wait:
            session.wait_connected(timeout)
        return session

    def mosh(self, user: TestUser, host: Optional[HostRef] = None, *, command: Optional[Sequence[str]] = None,
             server: Optional[str] = None, mosh_args: Sequence[str] = (), wait: bool = True,
             timeout: float = 30.0, sshd: Optional["Sshd"] = None) -> MoshSession:
        """``mosh user@host`` through the host's sshd (or ``sshd``), connected unless ``wait=False``.
        ``host`` may be left out for a user of one host."""
        account = user if host is None else user.on(host)
        return self._start(MoshSession(sshd or account.host.sshd, account, self.session_dir("mosh"),
                                       command=command, server=server, mosh_args=mosh_args), wait, timeout)

    def ssh(self, user: TestUser, host: Optional[HostRef] = None, *, command: Optional[str] = None,
            wait: bool = True, timeout: float = 30.0, sshd: Optional["Sshd"] = None) -> SshSession:
        """An interactive ``ssh -tt user@host [command]`` in tmux."""
        account = user if host is None else user.on(host)
        return self._start(SshSession(sshd or account.host.sshd, account, self.session_dir("ssh"),
                                      command=command), wait, timeout)

    def bystander(self, host: Optional[HostRef] = None, prefix: str = "sgb") -> Bystander:
        """A user with an account on ``host`` only (default: the fleet's only host), a live mosh
        session and a nohup job there."""
        hosts = self.fleet.resolve(None if host is None else [host])
        if len(hosts) != 1:
            raise HarnessError(f"a bystander lives on one host: say which ({', '.join(h.name for h in hosts)})")
        u = self.user(hosts=hosts, prefix=prefix)
        return make_bystander(u, self.mosh(u))

    # ------------------------------------------------------------------ teardown
    def close_sessions(self) -> List[str]:
        errors = []
        for s in reversed(self.sessions):
            try:
                s.close()  # type: ignore[attr-defined]
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(f"closing {s!r}: {exc}")
        return errors

    def cleanup(self) -> None:
        """Close client sides, destroy users (kill by UID, userdel), verify. Raises on leaks."""
        if self.cleaned:
            return
        self.cleaned = True
        errors = self.close_sessions()
        for u in reversed(self.users):
            try:
                u.destroy()
            except Exception as exc:  # pylint: disable=broad-except  # keep cleaning the others
                errors.append(f"{u!r}: {exc}")
        errors += self.fleet.leaks(self.users, self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise HarnessError(f"teardown of {self.name} left things behind:\n  " + "\n  ".join(errors))

    def __repr__(self) -> str:
        return f"<Scope {self.name} users={len(self.users)} sessions={len(self.sessions)}>"


def _short(name: str, keep: int = 16) -> str:
    # tmux socket paths below the scope dir must stay short (108 bytes at most)
    s = "".join(c if c.isalnum() else "_" for c in name)
    return s[-keep:] or "scope"

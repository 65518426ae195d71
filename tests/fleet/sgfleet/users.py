"""Fleet users: one person, one name, UID and ssh key, with an account on chosen hosts."""

from __future__ import annotations

import os
import random
import string
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Union

from sgtest import procfs
from sgtest.users import NAME_RE, TestUser, UserFactory, owner_tag

from .fleet import USER_UID_RANGE, FleetError, _read_db

if TYPE_CHECKING:  # pragma: no cover
    from .fleet import Fleet, FleetHost

PARALLEL = 8


class FleetUser:
    """The same account on several hosts. ``on(host)`` / ``user[host]`` give the
    :class:`sgtest.TestUser` of one host (host object, name, address or index), which works
    with ``MoshSession``, ``SshSession``, ``start_escapees``, ``Bystander``..."""

    def __init__(self, fleet: "Fleet", name: str, uid: int, gid: int, key_path: str, shell: str,
                 members: Dict[str, TestUser]) -> None:
        self.fleet = fleet
        self.name = name
        self.uid = uid
        self.gid = gid
        self.key_path = key_path
        self.shell = shell
        self.members = members  # host name -> TestUser

    def on(self, host: Union[int, str, "FleetHost"]) -> TestUser:
        h = self.fleet.host(host)
        try:
            return self.members[h.name]
        except KeyError:
            raise FleetError(f"user {self.name} has no account on {h.name} "
                             f"(only on {', '.join(self.members) or 'no host'})") from None

    __getitem__ = on

    @property
    def hosts(self) -> List["FleetHost"]:
        return [self.fleet.host(n) for n in self.members]

    @property
    def absent_on(self) -> List["FleetHost"]:
        return [h for h in self.fleet.hosts if h.name not in self.members]

    @property
    def pubkey(self) -> str:
        with open(self.key_path + ".pub") as fh:
            return fh.read().strip()

    @property
    def destroyed(self) -> bool:
        return all(u.destroyed for u in self.members.values())

    def processes(self) -> Dict[str, List[procfs.Proc]]:
        """Live processes of the UID on every host of the fleet (PIDs as each host sees them)."""
        return {h.name: procfs.procs_of_uid(self.uid, proc_root=h.proc_root) for h in self.fleet.hosts if h.alive()}

    def destroy(self) -> List[str]:
        """Kill the UID's processes and delete the account on each of its hosts (in parallel,
        each inside its own host). Returns error strings (empty = clean)."""
        todo = [u for u in self.members.values() if not u.destroyed and u.host.alive()]  # type: ignore[attr-defined]
        errors: List[str] = []

        def _one(u: TestUser) -> None:
            try:
                u.destroy()
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(f"{u.name} on {u.host.name}: {exc}")

        with ThreadPoolExecutor(PARALLEL) as ex:
            list(ex.map(_one, todo))
        return errors

    def __repr__(self) -> str:
        return f"<FleetUser {self.name} uid={self.uid} on {','.join(self.members) or '-'}>"


def _names_and_ids(hosts: Sequence["FleetHost"]) -> tuple:
    names: Set[str] = set()
    ids: Set[int] = set()
    for h in hosts:
        for db in ("passwd", "group"):
            for f in _read_db(h.path(f"/etc/{db}")):
                names.add(f[0])
                if len(f) > 2 and f[2].isdigit():
                    ids.add(int(f[2]))
    return names, ids


def create_fleet_user(fleet: "Fleet", name: Optional[str], hosts: Sequence["FleetHost"], *, prefix: str = "sgf",
                      shell: str = "/bin/bash", authorize: bool = True, uid: Optional[int] = None) -> FleetUser:
    # Name and UID must be free on *every* host (the user may be added to others later)
    # and the UID unused by any process on the machine (all namespaces).
    names, ids = _names_and_ids(fleet.hosts)
    if name is None:
        alphabet = string.ascii_lowercase + string.digits
        for _attempt in range(100):
            name = prefix + "".join(random.choice(alphabet) for _i in range(6))
            if name not in names:
                break
    if not NAME_RE.match(name or ""):
        raise FleetError(f"invalid user name {name!r}")
    if name in names:
        raise FleetError(f"user or group {name!r} already exists on a fleet host")
    busy = {u for p in procfs.iter_procs() for u in p.uids[:3]}
    if uid is None:
        for _attempt in range(1000):
            cand = random.randint(*USER_UID_RANGE)
            if cand not in ids and cand not in busy and cand not in UserFactory._used_uids:  # pylint: disable=protected-access
                uid = cand
                break
        else:
            raise FleetError("no free UID for a fleet user")
    elif uid in ids:
        raise FleetError(f"UID {uid} is taken on a fleet host")
    UserFactory._used_uids.add(uid)  # pylint: disable=protected-access
    key_dir = os.path.join(fleet.state_dir, "users", name)  # type: ignore[arg-type]
    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    key_path = os.path.join(key_dir, "id_ed25519")
    if not os.path.exists(key_path):
        from .fleet import _run  # pylint: disable=import-outside-toplevel
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"sgfleet-{name}", "-f", key_path])
    tag = owner_tag()
    members: Dict[str, TestUser] = {}
    errors: List[str] = []

    def _create(h: "FleetHost") -> None:
        try:
            h.run(["groupadd", "-g", str(uid), name])
            try:
                h.run(["useradd", "-m", "-s", shell, "-u", str(uid), "-g", str(uid), "-c", tag, name])  # type: ignore
            except Exception:
                h.run(["groupdel", name], check=False)  # type: ignore[list-item]
                raise
            u = TestUser(h, name, uid, uid, f"/home/{name}", key_path, shell)  # type: ignore[arg-type]
            members[h.name] = u
            if authorize:
                u.authorize_key()
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(f"{h.name}: {exc}")

    with ThreadPoolExecutor(PARALLEL) as ex:
        list(ex.map(_create, hosts))
    user = FleetUser(fleet, name, uid, uid, key_path, shell,  # type: ignore[arg-type]
                     {h.name: members[h.name] for h in hosts if h.name in members})
    if errors:
        user.destroy()
        raise FleetError(f"creating user {name} failed:\n  " + "\n  ".join(errors))
    return user

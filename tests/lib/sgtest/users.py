"""Real throw-away Unix accounts with an ed25519 key that the hosts' sshd accept.

A :class:`TestUser` is one person: a name, a UID and a key, with an account on one or more hosts
(the same name and UID on each). On the machine itself that is one host; on the fleet a user may
exist on some hosts and be absent from the others.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import string
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Set, Tuple, Union

from . import etcdb, procfs, utmp
from .host import HarnessError, Host, LocalHost

NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # what useradd takes without --badname
UID_RANGE = (20000, 59999)  # inside Debian's UID_MIN..UID_MAX, far from real users
PARALLEL = 8  # hosts worked on at once
OWNER_TAG = "sgtest owner "

_used_uids: Set[int] = set()  # handed out by this Python process: never twice, even once deleted


def owner_tag() -> str:
    """Marks what this Python process creates, so a later run can purge it if we crash."""
    return f"{OWNER_TAG}{os.getpid()}/{procfs.starttime(os.getpid())}"


def owner_alive(tag: str) -> bool:
    """True if the process named in an :func:`owner_tag` string still runs."""
    try:
        pid, start = tag.split(OWNER_TAG, 1)[1].strip().split("/")
        return procfs.alive(int(pid), int(start))
    except (IndexError, ValueError):
        return True  # not ours or unparsable: treat as alive, never touch it


def on_each(hosts: Sequence[Host], work: Callable[[Host], object]) -> List[str]:
    """Run ``work(host)`` for every host, several at once (each host's commands run inside it).
    Returns one error string per host that failed."""
    errors: List[str] = []

    def _one(h: Host) -> None:
        try:
            work(h)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(f"{h.name}: {exc}")

    if len(hosts) == 1:
        _one(hosts[0])
    else:
        with ThreadPoolExecutor(PARALLEL) as ex:
            list(ex.map(_one, hosts))
    return errors


HostRef = Union[Host, str, int]


class TestUser:
    """One account name and UID on ``hosts``. ``name`` may stop existing (see :meth:`drop_account`);
    ``uid`` never changes.

    Methods act on every host of the user. ``on(host)`` (or ``user[host]``; a host object, name,
    address or fleet index) is the same user on that host alone, which is what a session needs.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, hosts: Union[Host, Sequence[Host]], name: str, uid: int, gid: int, home: str,
                 key_path: str, shell: str, _gone: Optional[Set[str]] = None) -> None:
        self.hosts: List[Host] = [hosts] if isinstance(hosts, Host) else list(hosts)
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.key_path = key_path
        self.shell = shell
        self._gone = set() if _gone is None else _gone  # hosts whose account is destroyed; shared by views

    # ------------------------------------------------------------------ hosts
    @property
    def host(self) -> Host:
        """The user's only host."""
        if len(self.hosts) != 1:
            raise HarnessError(f"{self!r} exists on several hosts: say which (user.on(host))")
        return self.hosts[0]

    def on(self, which: HostRef) -> "TestUser":
        for h in self.hosts:
            if which is h or which in (h.name, h.address, getattr(h, "index", None)):
                if len(self.hosts) == 1:
                    return self
                return TestUser(h, self.name, self.uid, self.gid, self.home, self.key_path, self.shell, self._gone)
        name = getattr(which, "name", which)
        raise HarnessError(f"user {self.name} has no account on {name} "
                           f"(only on {', '.join(h.name for h in self.hosts) or 'no host'})")

    __getitem__ = on

    def _up(self) -> List[Host]:
        return [h for h in self.hosts if h.alive()]

    @property
    def destroyed(self) -> bool:
        return all(h.name in self._gone for h in self.hosts)

    @property
    def pubkey(self) -> str:
        with open(self.key_path + ".pub") as fh:
            return fh.read().strip()

    # ------------------------------------------------------------------ state
    def account_exists(self) -> bool:
        """The account exists (with this UID) on one of the user's hosts at least."""
        return any(self._exists_on(h) for h in self._up())

    def _exists_on(self, host: Host) -> bool:
        cp = host.run(["getent", "passwd", self.name], check=False)
        return cp.returncode == 0 and cp.stdout.split(":")[2] == str(self.uid)

    def processes(self, include_zombies: bool = False) -> List[procfs.Proc]:
        """Processes of the UID on the user's hosts (each :class:`procfs.Proc` knows its host's procfs)."""
        return [p for h in self._up() for p in procfs.procs_of_uid(self.uid, include_zombies, h.proc_root)]

    def settled_processes(self, quiet: float = 0.5, timeout: float = 15.0) -> List[procfs.Proc]:
        """The processes once none has appeared or gone for ``quiet`` seconds: escapees fork and
        exit intermediate processes while they start, and a snapshot must not catch those."""
        deadline = time.monotonic() + timeout
        last: Optional[Set] = None
        now = self.processes()
        while time.monotonic() < deadline:
            now = self.processes()
            keys = {(p.proc_root, p.key()) for p in now}
            if keys == last:
                return now
            last = keys
            time.sleep(quiet)
        raise HarnessError(f"processes of {self.name} never settled: {[str(p) for p in now]}")

    def pids(self, include_zombies: bool = False) -> List[int]:
        return [p.pid for p in self.processes(include_zombies)]

    # ------------------------------------------------------------------ files
    def install_file(self, src: str, rel_dest: str, mode: int = 0o755) -> str:
        """Copy ``src`` (a local path) into the home as ``rel_dest`` (parents created), owned by
        the user, on each host. Returns the path as the user's hosts see it."""
        for h in self.hosts:
            home = h.path(self.home)
            cur = home
            for part in os.path.dirname(rel_dest).split("/"):
                cur = os.path.join(cur, part)
                if part and not os.path.isdir(cur):
                    os.mkdir(cur, 0o755)
                    os.chown(cur, self.uid, self.gid)
            dest = os.path.join(home, rel_dest)
            shutil.copyfile(src, dest)
            os.chown(dest, self.uid, self.gid)
            os.chmod(dest, mode)
        return os.path.join(self.home, rel_dest)

    def authorize_key(self) -> None:
        """Put the user's public key in ``~/.ssh/authorized_keys`` on each host."""
        for h in self.hosts:
            ssh_dir = os.path.join(h.path(self.home), ".ssh")
            os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
            os.chown(ssh_dir, self.uid, self.gid)
            etcdb.write_file(os.path.join(ssh_dir, "authorized_keys"), self.pubkey + "\n", 0o600, self.uid, self.gid)

    # ------------------------------------------------------------------ ending
    def kill_all(self, timeout: float = 15.0) -> List[procfs.Proc]:
        """SIGKILL every process of the UID (kernel kill(-1) as the UID + /proc re-scan) on each host;
        the same UID elsewhere is left alone. Returns what was found alive."""
        return [p for h in self._up()
                for p in procfs.kill_uid(self.uid, timeout, gid=self.gid, proc_root=h.proc_root, killer=h.kill_all_as)]

    def drop_account(self) -> None:
        """``userdel -f`` while processes may still run: leaves a UID with no name.

        Home directory and processes stay; :meth:`destroy` still cleans up by UID.
        """
        for h in self.hosts:
            h.run(["userdel", "-f", self.name])

    def destroy(self) -> None:
        """On each host: kill everything of the UID, delete the account and its files, verify.
        Raises :class:`HarnessError` naming what was left behind."""
        todo = [h for h in self.hosts if h.name not in self._gone]
        self._gone.update(h.name for h in todo if not h.alive())  # the account went down with its host
        errors = on_each([h for h in todo if h.name not in self._gone], self._destroy_on)
        if errors:
            raise HarnessError(f"destroying {self.name}: " + "; ".join(errors))

    def _destroy_on(self, h: Host) -> None:
        procfs.kill_uid(self.uid, gid=self.gid, proc_root=h.proc_root, killer=h.kill_all_as)
        # zombies may remain until their parent (often PID 1) reaps them; userdel does not mind
        # them, and they hold no resources worth waiting for.
        if self._exists_on(h):
            cp = h.run(["userdel", "-r", self.name], check=False)
            if cp.returncode not in (0, 12) or self._exists_on(h):  # 12: could not remove home
                cp = h.run(["userdel", "-f", "-r", self.name], check=False)
            if self._exists_on(h):
                raise HarnessError(f"userdel {self.name} failed: {cp.stderr}")
        # group of the same name, if userdel left it (USERGROUPS_ENAB normally removes it)
        h.run(["groupdel", self.name], check=False)
        home = h.path(self.home)
        if os.path.isdir(home) and self.home.startswith("/home/"):
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(h.path(f"/tmp/tmux-{self.uid}"), ignore_errors=True)
        for path in (f"/var/mail/{self.name}", f"/var/spool/mail/{self.name}"):
            if os.path.exists(h.path(path)):
                os.unlink(h.path(path))
        utmp.retire_records(lambda r: r.user == self.name, h.utmp_path)
        left = procfs.procs_of_uid(self.uid, proc_root=h.proc_root)
        if left:
            raise HarnessError(f"processes of {self.name} survived teardown: {[str(p) for p in left]}")
        self._gone.add(h.name)

    def __repr__(self) -> str:
        return f"<TestUser {self.name} uid={self.uid} on {','.join(h.name for h in self.hosts) or '-'}>"


# --------------------------------------------------------------------------- creation


def _busy_uids() -> Set[int]:
    """Real, effective and saved UIDs of every process on the machine (all namespaces)."""
    busy: Set[int] = set()
    for pid in procfs.all_pids():
        for line in (procfs.read_file(f"/proc/{pid}/status") or "").splitlines():
            if line.startswith("Uid:"):
                busy.update(int(x) for x in line.split()[1:4])
                break
    return busy


def _taken(hosts: Sequence[Host]) -> Tuple[Set[str], Set[int]]:
    names: Set[str] = set()
    ids: Set[int] = set()
    for h in hosts:
        n, i = etcdb.names_and_ids(h.path("/etc"))
        names |= n
        ids |= i
    return names, ids


def _check_name(name: str) -> None:
    # useradd --badname takes directory-style names (Bob.Smith@corp.example); nothing that would
    # break a passwd line, a path or an option.
    if not name or name.startswith("-") or len(name) > 64 or any(c in name for c in ":/,\\ \t\n") \
            or not name.isprintable():
        raise HarnessError(f"invalid user name {name!r}")


def create_user(hosts: Sequence[Host], key_dir: str, *, name: Optional[str] = None, prefix: str = "sgt",
                shell: str = "/bin/bash", authorize: bool = True, uid: Optional[int] = None,
                uid_range: Tuple[int, int] = UID_RANGE, known_hosts: Sequence[Host] = ()) -> TestUser:
    """``useradd -m`` one account, with the same name, UID and a new ed25519 key, on every one of
    ``hosts``; its key is authorized in ``~/.ssh`` unless ``authorize`` is false. The name (random
    after ``prefix`` unless given) and UID are free on every host of ``known_hosts`` too (a user may
    be added to those later), and no process on the machine runs with the UID."""
    names, ids = _taken(list(hosts) + list(known_hosts))
    if name is None:
        alphabet = string.ascii_lowercase + string.digits
        name = next((n for n in (prefix + "".join(random.choice(alphabet) for _i in range(6)) for _t in range(100))
                     if n not in names), None)
        if name is None:
            raise HarnessError("no free user name found")
    _check_name(name)
    if name in names:
        raise HarnessError(f"user or group {name!r} already exists")
    if uid is None:
        busy = _busy_uids()
        free = (c for c in (random.randint(*uid_range) for _t in range(1000))
                if c not in ids and c not in busy and c not in _used_uids)
        uid = next(free, None)
        if uid is None:
            raise HarnessError("no free UID found")
    elif uid in ids:
        raise HarnessError(f"UID {uid} is taken")
    _used_uids.add(uid)
    os.makedirs(os.path.join(key_dir, name), mode=0o700, exist_ok=True)
    key_path = os.path.join(key_dir, name, "id_ed25519")
    LocalHost().run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"sgtest-{name}", "-f", key_path])
    user = TestUser(hosts, name, uid, uid, f"/home/{name}", key_path, shell)
    tag = owner_tag()

    def _add(h: Host) -> None:
        argv = ["useradd", "-m", "-U", "-u", str(uid), "-s", shell, "-d", user.home, "-c", tag]
        h.run(argv + ([] if NAME_RE.match(name) else ["--badname"]) + ["--", name])  # type: ignore[arg-type]
        entry = [f for f in etcdb.read_db(h.path("/etc/passwd")) if f[0] == name]
        if [f[2:4] for f in entry] != [[str(uid), str(uid)]]:  # -U gives the group the UID when it is free
            raise HarnessError(f"useradd made {entry!r}, not UID and GID {uid}")
        if authorize:
            user.on(h).authorize_key()

    errors = on_each(user.hosts, _add)
    if errors:
        try:
            user.destroy()
        except HarnessError as exc:
            errors.append(str(exc))
        raise HarnessError(f"creating user {name} failed:\n  " + "\n  ".join(errors))
    return user

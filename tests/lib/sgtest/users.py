"""Real throw-away Unix accounts with an ed25519 key that the test sshd accepts."""

from __future__ import annotations

import os
import random
import re
import shutil
import string
import time
from typing import List, Optional, Set

from . import procfs, utmp
from .host import HarnessError, Host

NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
UID_RANGE = (20000, 59999)  # inside Debian's UID_MIN..UID_MAX, far from real users


OWNER_TAG = "sgtest owner "


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


class TestUser:
    """One account. ``name`` may stop existing (see :meth:`drop_account`); ``uid`` never changes."""

    __test__ = False  # not a pytest test class

    def __init__(self, host: Host, name: str, uid: int, gid: int, home: str,
                 key_path: str, shell: str) -> None:
        self.host = host
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.key_path = key_path
        self.shell = shell
        self.destroyed = False

    @property
    def pubkey(self) -> str:
        with open(self.key_path + ".pub") as fh:
            return fh.read().strip()

    def account_exists(self) -> bool:
        cp = self.host.run(["getent", "passwd", self.name], check=False)
        return cp.returncode == 0 and cp.stdout.split(":")[2] == str(self.uid)

    def processes(self, include_zombies: bool = False) -> List[procfs.Proc]:
        return procfs.procs_of_uid(self.uid, include_zombies, self.host.proc_root)

    def settled_processes(self, quiet: float = 0.5, timeout: float = 15.0) -> List[procfs.Proc]:
        """The processes once none has appeared or gone for ``quiet`` seconds: escapees fork and
        exit intermediate processes while they start, and a snapshot must not catch those."""
        deadline = time.monotonic() + timeout
        last: Optional[Set] = None
        now = self.processes()
        while time.monotonic() < deadline:
            now = self.processes()
            keys = {p.key() for p in now}
            if keys == last:
                return now
            last = keys
            time.sleep(quiet)
        raise HarnessError(f"processes of {self.name} never settled: {[str(p) for p in now]}")

    def pids(self, include_zombies: bool = False) -> List[int]:
        return [p.pid for p in self.processes(include_zombies)]

    def install_file(self, src: str, rel_dest: str, mode: int = 0o755) -> str:
        """Copy ``src`` (a local path) into the home as ``rel_dest`` (parents created), owned by
        the user. Returns the path as the user's host sees it."""
        home = self.host.path(self.home)
        dest = os.path.join(home, rel_dest)
        parts = os.path.relpath(os.path.dirname(dest), home).split(os.sep)
        cur = home
        for part in parts:
            if part in ("", "."):
                continue
            cur = os.path.join(cur, part)
            if not os.path.isdir(cur):
                os.mkdir(cur, 0o755)
                os.chown(cur, self.uid, self.gid)
        shutil.copyfile(src, dest)
        os.chown(dest, self.uid, self.gid)
        os.chmod(dest, mode)
        return os.path.join(self.home, rel_dest)

    def authorize_key(self) -> None:
        ssh_dir = os.path.join(self.host.path(self.home), ".ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        os.chown(ssh_dir, self.uid, self.gid)
        ak = os.path.join(ssh_dir, "authorized_keys")
        with open(ak, "w") as fh:
            fh.write(self.pubkey + "\n")
        os.chown(ak, self.uid, self.gid)
        os.chmod(ak, 0o600)

    def kill_all(self, timeout: float = 15.0) -> List[procfs.Proc]:
        """SIGKILL every process of the UID (kernel kill(-1) as the UID + /proc re-scan)."""
        return procfs.kill_uid(self.uid, timeout, gid=self.gid, proc_root=self.host.proc_root,
                               killer=self.host.kill_all_as)

    def drop_account(self) -> None:
        """``userdel -f`` while processes may still run: leaves a UID with no name.

        Home directory and processes stay; :meth:`destroy` still cleans up by UID.
        """
        self.host.run(["userdel", "-f", self.name])

    def destroy(self) -> None:
        """Kill everything of the UID, verify, delete the account and its files."""
        if self.destroyed:
            return
        self.kill_all()  # zombies may remain until their parent (often PID 1) reaps them;
        # userdel does not mind them, and they hold no resources worth waiting for.
        if self.account_exists():
            cp = self.host.run(["userdel", "-r", self.name], check=False)
            if cp.returncode not in (0, 12) or self.account_exists():  # 12: could not remove home
                cp = self.host.run(["userdel", "-f", "-r", self.name], check=False)
            if self.account_exists():
                raise HarnessError(f"userdel {self.name} failed: {cp.stderr}")
        # group of the same name, if userdel left it (USERGROUPS_ENAB normally removes it)
        self.host.run(["groupdel", self.name], check=False)
        home = self.host.path(self.home)
        if os.path.isdir(home) and self.home.startswith("/home/"):
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(self.host.path(f"/tmp/tmux-{self.uid}"), ignore_errors=True)
        for path in (f"/var/mail/{self.name}", f"/var/spool/mail/{self.name}"):
            path = self.host.path(path)
            if os.path.exists(path):
                os.unlink(path)
        utmp.retire_records(lambda r: r.user == self.name, self.host.utmp_path)
        left = self.processes(include_zombies=False)
        if left:
            raise HarnessError(f"processes of {self.name} survived teardown: {[str(p) for p in left]}")
        self.destroyed = True

    def __repr__(self) -> str:
        return f"<TestUser {self.name} uid={self.uid}>"


class UserFactory:
    """Creates users on ``host``; :meth:`cleanup` destroys every one it made.

    UIDs are chosen explicitly and never handed out twice in one run, so a UID
    whose account was dropped (see :meth:`TestUser.drop_account`) is never
    reused by a later user while its processes still run.
    """

    _used_uids: Set[int] = set()  # across all factories of this Python process

    def __init__(self, host: Host, state_dir: str, prefix: str = "sgt") -> None:
        self.host = host
        self.state_dir = state_dir
        self.prefix = prefix
        self.users: List[TestUser] = []
        os.makedirs(state_dir, mode=0o700, exist_ok=True)

    def _free_uid(self) -> int:
        busy_procs = {u for p in procfs.iter_procs(self.host.proc_root) for u in p.uids[:3]}
        for _attempt in range(1000):
            uid = random.randint(*UID_RANGE)
            if uid in self._used_uids or uid in busy_procs:
                continue
            if self.host.run(["getent", "passwd", str(uid)], check=False).returncode == 0:
                continue
            if self.host.run(["getent", "group", str(uid)], check=False).returncode == 0:
                continue
            self._used_uids.add(uid)
            return uid
        raise HarnessError("no free UID found")

    def _free_name(self, prefix: str) -> str:
        alphabet = string.ascii_lowercase + string.digits
        for _attempt in range(100):
            name = prefix + "".join(random.choice(alphabet) for _i in range(6))
            if not NAME_RE.match(name):
                raise HarnessError(f"invalid user name {name!r} from prefix {prefix!r}")
            if self.host.run(["getent", "passwd", name], check=False).returncode != 0 and \
                    self.host.run(["getent", "group", name], check=False).returncode != 0:
                return name
        raise HarnessError("no free user name found")

    def create(self, prefix: Optional[str] = None, shell: str = "/bin/bash",
               authorize: bool = True) -> TestUser:
        """useradd -m a fresh user with an ed25519 key (installed in ~/.ssh/authorized_keys)."""
        name = self._free_name(prefix or self.prefix)
        uid = self._free_uid()
        self.host.run(["groupadd", "-g", str(uid), name])
        try:
            self.host.run(["useradd", "-m", "-s", shell, "-u", str(uid), "-g", str(uid),
                           "-c", owner_tag(), name])
        except HarnessError:
            self.host.run(["groupdel", name], check=False)
            raise
        fields = self.host.run(["getent", "passwd", name]).stdout.strip().split(":")
        pw_uid, pw_gid, pw_dir = int(fields[2]), int(fields[3]), fields[5]
        key_dir = os.path.join(self.state_dir, name)
        os.makedirs(key_dir, mode=0o700, exist_ok=True)
        key_path = os.path.join(key_dir, "id_ed25519")
        user = TestUser(self.host, name, pw_uid, pw_gid, pw_dir, key_path, shell)
        self.users.append(user)  # registered before anything else can fail
        self.host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"sgtest-{name}",
                       "-f", key_path])
        if authorize:
            user.authorize_key()
        return user

    __call__ = create

    def cleanup(self) -> List[str]:
        """Destroy every user (reverse order). Returns error strings (empty = clean)."""
        errors = []
        for user in reversed(self.users):
            try:
                user.destroy()
            except Exception as exc:  # keep cleaning the others
                errors.append(f"{user!r}: {exc}")
        return errors

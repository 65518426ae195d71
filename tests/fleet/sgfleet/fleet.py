"""The fleet: N namespaced hosts with their own sshd on 127.0.0.(N+1):22.

Life cycle (root only)::

    fleet = Fleet(state_dir)      # loads state.json if that fleet is already up
    fleet.up(4)                   # sghost01..sghost04 on 127.0.0.2..127.0.0.5
    fleet.hosts[0].run(["id"])    # as root inside sghost01
    fleet.down()                  # stops everything by PID, verifies, removes the state dir

Everything lives in the state directory (default ``/tmp/sessionguard-fleet/default``)::

    state.json            hosts: name, address, init/unshare PIDs + start times, namespaces
    owner                 "sgtest owner PID/START KIND" of the process that brought it up
    inventory.yml         Ansible inventory (see render_inventory)
    ops/id_ed25519        the key Ansible logs in with (user ops, sudo NOPASSWD)
    users/NAME/id_ed25519 keys of users made with create_user
    template/etc          the machine's /etc copied at up (+ ops): lower layer of every host's /etc
    hosts/NAME/           etc-upper/ etc-work/ (the host's /etc layer), home/ root/ tmp/ var-log/
                          var-tmp/ (the host's own directories), config.json, init.log, sshd.log
    cp/                   ControlPath of Ansible's ssh masters
    scopes/               client-side state of sessions (tmux sockets, screens)
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from sgtest import procfs
from sgtest.host import HarnessError, NamespacedHost
from sgtest.sshd import SSHD_BINARY, Sshd, _banner
from sgtest.users import OWNER_TAG, owner_alive, owner_tag
from sgtest.waiting import Stopwatch, wait_for

from .privatevar import private_var_binds

HERE = os.path.dirname(os.path.abspath(__file__))
HOSTINIT = os.path.join(HERE, "hostinit.py")
SYSTEM_PYTHON = "/usr/bin/python3"
PYENV_ROOT = os.environ.get("PYENV_ROOT", "/root/.pyenv")
STATE_ROOT = "/tmp/sessionguard-fleet"
DEFAULT_STATE_DIR = os.path.join(STATE_ROOT, "default")
LOCK_PATH = os.path.join(STATE_ROOT, ".lock")
MAX_HOSTS = 250  # 127.0.0.2 .. 127.0.0.251
OPS_USER = "ops"
OPS_UID_FROM = 1500
USER_UID_RANGE = (10000, 19999)  # fleet users; sgtest's local users use 20000-59999
NAMESPACES = ("pid", "mnt", "uts")
REQUIRED = ("unshare", "nsenter", "setpriv", "cp", "ssh-keygen", "useradd", "groupadd", "userdel",
            "sudo", "mosh", "mosh-server", "tmux", "ssh")


class FleetError(HarnessError):
    """The fleet could not be brought up/down, or something was left behind."""


def host_name(index: int) -> str:
    """sghost01, sghost02, ... (1-based)."""
    return f"sghost{index:02d}"


def address_of(index: int) -> str:
    """Host 1 -> 127.0.0.2, host 20 -> 127.0.0.21."""
    if not 1 <= index <= MAX_HOSTS:
        raise ValueError(f"host index {index} outside 1..{MAX_HOSTS}")
    return f"127.0.0.{index + 1}"


def pyenv_python(version: str) -> str:
    """Newest pyenv interpreter X.Y (a real binary, not a shim)."""
    found = sorted(glob.glob(f"{PYENV_ROOT}/versions/{version}.*/bin/python{version}"),
                   key=lambda p: [int(x) if x.isdigit() else x for x in p.split("/")[-3].split(".")])
    if not found:
        raise FleetError(f"pyenv Python {version} not found under {PYENV_ROOT}/versions")
    return found[-1]


@dataclass(frozen=True)
class Profile:
    """How a host differs: which interpreter Ansible uses, whether psutil imports there."""

    name: str
    python: str  # "system" or a pyenv version "3.9"
    psutil: bool  # expected to be importable by that interpreter on that host
    hide_psutil: bool = False  # whiteout psutil in Debian's dist-packages on this host
    groups: Tuple[str, ...] = ()

    def interpreter(self) -> str:
        return SYSTEM_PYTHON if self.python == "system" else pyenv_python(self.python)


# Hosts take these in turn: sghost01 debian-py311, sghost02 pyenv-py39, sghost03 pyenv-py313,
# sghost04 debian-py311-nopsutil, sghost05 debian-py311, ...
PROFILES: Tuple[Profile, ...] = (
    Profile("debian-py311", "system", True, False, ("py311", "psutil", "debian_python")),
    Profile("pyenv-py39", "3.9", False, False, ("py39", "no_psutil", "pyenv_python")),
    Profile("pyenv-py313", "3.13", True, False, ("py313", "psutil", "pyenv_python")),
    Profile("debian-py311-nopsutil", "system", False, True, ("py311", "no_psutil", "debian_python")),
)
PROFILE_BY_NAME = {p.name: p for p in PROFILES}


# --------------------------------------------------------------------------- small helpers


def _run(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    cp = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kw)
    if cp.returncode != 0:
        raise FleetError(f"{list(argv)!r} exited {cp.returncode}: {cp.stderr.strip() or cp.stdout.strip()}")
    return cp


def _run_parallel(argvs: Sequence[Sequence[str]], timeout: float = 120.0) -> None:
    """Start every command at once, wait for all; raise on the first failure."""
    procs = [(a, subprocess.Popen(list(a), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
             for a in argvs]
    errors = []
    for argv, p in procs:
        try:
            _out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            _out, err = p.communicate()
        if p.returncode != 0:
            errors.append(f"{argv!r} exited {p.returncode}: {err.strip()}")
    if errors:
        raise FleetError("\n".join(errors))


def _write(path: str, text: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    tmp = path + ".sgfleet-tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _ns_link(pid: int, kind: str) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _mountinfo_lines(pid: Union[int, str] = "self") -> List[str]:
    try:
        with open(f"/proc/{pid}/mountinfo") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


def _unescape_mount_path(p: str) -> str:
    return p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mounts_touching(paths: Sequence[str], pid: Union[int, str] = "self") -> List[str]:
    """mountinfo lines (of ``pid``'s mount namespace) whose mount point, source root, source
    or options (e.g. an overlay's lowerdir/upperdir) name a path at or below one of ``paths``."""
    out = []
    for line in _mountinfo_lines(pid):
        f = line.split()
        if len(f) < 5:
            continue
        words = [_unescape_mount_path(w) for w in f[3:5]]
        if " - " in line:  # after the separator: fstype, source, super options (comma separated)
            tail = line.split(" - ", 1)[1].split()
            words += [_unescape_mount_path(w) for w in tail[1:2]]
            for opt in (tail[2] if len(tail) > 2 else "").split(","):
                words += [_unescape_mount_path(v) for v in opt.partition("=")[2].split(":") if v]
        for p in paths:
            if any(x == p or x.startswith(p.rstrip("/") + "/") for x in words):
                out.append(line)
                break
    return out


def _ancestors(pid: int) -> Set[int]:
    out = set()
    while pid > 1:
        out.add(pid)
        p = procfs.read_proc(pid)
        if p is None:
            break
        pid = p.ppid
    return out


def safe_rmtree(path: str) -> None:
    """rmtree that refuses to run while anything is mounted at or below ``path`` (in this
    mount namespace) and never crosses into another file system."""
    if not os.path.lexists(path):
        return
    mounted = _mounts_touching([path])
    if mounted:
        raise FleetError(f"refusing to remove {path}: mounts below it:\n  " + "\n  ".join(mounted))
    dev = os.lstat(path).st_dev
    for top, dirs, _files in os.walk(path):
        for d in dirs:
            st = os.lstat(os.path.join(top, d))
            if st.st_dev != dev:
                raise FleetError(f"refusing to remove {path}: {os.path.join(top, d)} is another file system")
    shutil.rmtree(path)


# --------------------------------------------------------------------------- the host's sshd


class HostSshd(Sshd):
    """A host's own sshd (127.0.0.N:22), run and supervised by the host's init.

    Works wherever sgtest expects an :class:`sgtest.Sshd` (``MoshSession``, ``SshSession``,
    ``run_as``, ``audit_ids``...). ``pid`` is sshd's PID inside the host; it changes when
    the init restarts sshd (:meth:`refresh` re-reads it). :meth:`stop` / :meth:`start` ask
    the init to stop / start it. Config: the host's ``/etc/ssh/sshd_config``; log: the
    host's ``sshd.log`` in the state dir.
    """

    def __init__(self, host: "FleetHost", local_log: str) -> None:
        super().__init__(host, "/etc/ssh", port=22, address=host.address)
        self.port = 22
        self.config_path = "/etc/ssh/sshd_config"
        self.host_key = "/etc/ssh/ssh_host_ed25519_key"
        self.pid_file = "/run/sshd.pid"
        self.keys_dir = "/etc/ssh/authorized_keys"
        self.local_log = local_log

    def refresh(self) -> Optional[int]:
        """Re-read sshd's PID from its PidFile; None while sshd is not running."""
        try:
            with open(self.host.path(self.pid_file)) as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None:
            start = procfs.starttime(pid, self.host.proc_root)
            p = procfs.read_proc(pid, self.host.proc_root)
            if start is None or p is None or p.zombie or not p.comm.startswith("sshd"):
                pid = None
            else:
                self.starttime = start
        self.pid = pid
        return pid

    def running(self) -> bool:
        pid = self.refresh()
        return pid is not None and procfs.alive(pid, self.starttime, self.host.proc_root)

    def listening(self) -> bool:
        """sshd runs, holds the listening socket on port 22 and answers with a banner."""
        return (self.running() and self._listening(self.pid, 22, self.host.proc_root)  # type: ignore[arg-type]
                and _banner(self.address, 22))

    def start(self, timeout: float = 15.0) -> "HostSshd":
        """Make sure sshd runs and answers (asks the init to start it if needed)."""
        if not self.running():
            self.host.signal_init(signal.SIGUSR1)
        wait_for(self.listening, timeout, lambda: f"sshd of {self.host.name} to listen on {self.address}:22; "
                 f"log tail:\n{self.log_text()[-1500:]}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the init to stop sshd (SIGTERM; not restarted until :meth:`start`)."""
        old = procfs.read_proc(self.pid, self.host.proc_root) if self.running() else None
        self.host.signal_init(signal.SIGUSR2)
        if old is not None:
            procfs.wait_gone([old], timeout)

    def log_text(self) -> str:
        try:
            with open(self.local_log, errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<HostSshd {self.host.name} {self.address}:22 pid={self.pid}>"


# --------------------------------------------------------------------------- hosts


class FleetHost(NamespacedHost):
    """One host of the fleet. A :class:`sgtest.NamespacedHost` (``run``, ``spawn``, ``path``,
    ``proc_root``, ``utmp_path``, ``kill_all_as``) plus what the fleet knows about it."""

    def __init__(self, fleet: "Fleet", rec: dict) -> None:
        super().__init__(rec["name"], rec["address"], rec["init_pid"], rec["init_start"])
        self.fleet = fleet
        self.record = rec
        self.index: int = rec["index"]
        self.hostname: str = rec["hostname"]
        self.hostdir: str = rec["hostdir"]
        self.profile: Profile = PROFILE_BY_NAME.get(rec["profile"]) or Profile(**rec["profile_spec"])
        self.python: str = rec["python"]
        self.psutil: bool = rec["psutil"]
        self.groups: Tuple[str, ...] = tuple(rec["groups"])
        self.unshare_pid: int = rec["unshare_pid"]
        self.unshare_start: int = rec["unshare_start"]
        self.namespaces: Dict[str, str] = dict(rec.get("ns", {}))
        self.sshd = HostSshd(self, os.path.join(self.hostdir, "sshd.log"))

    @property
    def init_log(self) -> str:
        return os.path.join(self.hostdir, "init.log")

    def signal_init(self, sig: int) -> bool:
        """Send ``sig`` to the host's init (from outside its namespace, so the init obeys)."""
        return procfs.signal_proc(self.init_pid, self.init_starttime, sig)

    def global_pid(self, pid: int) -> Optional[int]:
        """The machine-wide PID of this host's process ``pid`` (None if there is none)."""
        want = self.namespaces.get("pid")
        for gp in procfs.all_pids():
            if _ns_link(gp, "pid") != want:
                continue
            try:
                with open(f"/proc/{gp}/status") as fh:
                    nspid = next((line.split()[1:] for line in fh if line.startswith("NSpid:")), [])
            except OSError:
                continue
            if nspid and nspid[-1] == str(pid):
                return gp
        return None

    def sshd_answers(self) -> bool:
        return _banner(self.address, 22)

    def run_python(self, code: str, **kw) -> subprocess.CompletedProcess:
        """Run ``code`` with the host's Ansible interpreter (as root, inside the host)."""
        return self.run([self.python, "-c", code], **kw)

    def inventory_vars(self) -> Dict[str, object]:
        return {
            "ansible_host": self.address,
            "ansible_port": 22,
            "ansible_user": OPS_USER,
            "ansible_ssh_private_key_file": self.fleet.ops_key_path,
            # ControlPath in the state dir: Ansible's persistent ssh masters are found (and
            # stopped) by down() like every other client-side process of the fleet.
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                       "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes "
                                       f"-o ControlPath={self.fleet.state_dir}/cp/%C",
            "ansible_become": True,
            "ansible_become_method": "sudo",
            "ansible_python_interpreter": self.python,
            "sgfleet_profile": self.profile.name,
            "sgfleet_psutil": self.psutil,
            "sgfleet_init_pid": self.init_pid,
        }

    def __repr__(self) -> str:
        return f"<FleetHost {self.name} {self.address} init={self.init_pid} {self.profile.name}>"


# --------------------------------------------------------------------------- inventory


def _yaml_scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def render_inventory(hosts: Sequence[FleetHost], state_dir: str) -> str:
    """YAML inventory: group ``fleet`` with every host and its connection vars, plus one
    group per difference (``py39``, ``py311``, ``py313``, ``psutil``, ``no_psutil``,
    ``debian_python``, ``pyenv_python``)."""
    lines = [f"# sessionguard fleet in {state_dir} (generated by tests/fleet; do not edit)",
             "all:", "  children:", "    fleet:", "      hosts:"]
    for h in hosts:
        lines.append(f"        {h.name}:")
        for k, v in h.inventory_vars().items():
            lines.append(f"          {k}: {_yaml_scalar(v)}")
    groups: Dict[str, List[str]] = {}
    for h in hosts:
        for g in h.groups:
            groups.setdefault(g, []).append(h.name)
    for g in sorted(groups):
        lines += [f"    {g}:", "      hosts:"] + [f"        {n}: {{}}" for n in groups[g]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the fleet


class Fleet:
    """A fleet of namespaced hosts described by ``state_dir`` (see the module doc).

    ``Fleet(state_dir)`` attaches to a fleet that is already up there (state.json), so
    ``down`` and ``status`` work from a fresh process. ``kind`` is recorded in the owner
    file: fleets of kind ``pytest`` whose owner process died are purged by the fixtures.
    """

    def __init__(self, state_dir: Optional[str] = None, kind: str = "api") -> None:
        self.state_dir = os.path.abspath(state_dir or os.environ.get("SG_FLEET_STATE_DIR") or DEFAULT_STATE_DIR)
        self.kind = kind
        self.hosts: List[FleetHost] = []
        self.users: list = []
        self.scopes: list = []
        self._default_scope = None
        self._unshare: Dict[str, subprocess.Popen] = {}
        self.timings: Dict[str, float] = {}
        self._load()

    # ------------------------------------------------------------------ paths
    @property
    def state_file(self) -> str:
        return os.path.join(self.state_dir, "state.json")

    @property
    def inventory_path(self) -> str:
        return os.path.join(self.state_dir, "inventory.yml")

    @property
    def ops_key_path(self) -> str:
        return os.path.join(self.state_dir, "ops", "id_ed25519")

    # ------------------------------------------------------------------ lookup
    def host(self, which: Union[int, str, FleetHost]) -> FleetHost:
        """By name (``sghost03``), address, 1-based index, or a host object."""
        if isinstance(which, FleetHost):
            return which
        for h in self.hosts:
            if which in (h.name, h.address, h.index):
                return h
        raise KeyError(f"no host {which!r} in the fleet ({', '.join(h.name for h in self.hosts) or 'down'})")

    __getitem__ = host

    def __iter__(self) -> Iterator[FleetHost]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def hosts_in(self, group: str) -> List[FleetHost]:
        """Hosts of an inventory group (``py39``, ``no_psutil``...)."""
        return [h for h in self.hosts if group in h.groups]

    def resolve(self, hosts: Optional[Iterable[Union[int, str, FleetHost]]]) -> List[FleetHost]:
        return list(self.hosts) if hosts is None else [self.host(h) for h in hosts]

    # ------------------------------------------------------------------ state
    def _load(self) -> None:
        try:
            with open(self.state_file) as fh:
                state = json.load(fh)
        except FileNotFoundError:
            return
        self.hosts = [FleetHost(self, rec) for rec in state["hosts"]]

    def _save(self) -> None:
        state = {"version": 1, "state_dir": self.state_dir, "kind": self.kind,
                 "hosts": [h.record for h in self.hosts]}
        _write(self.state_file, json.dumps(state, indent=1) + "\n", 0o600)

    def write_inventory(self) -> str:
        _write(self.inventory_path, render_inventory(self.hosts, self.state_dir), 0o644)
        return self.inventory_path

    def owner(self) -> Tuple[Optional[str], Optional[str]]:
        """(owner tag, kind) from the owner file."""
        try:
            with open(os.path.join(self.state_dir, "owner")) as fh:
                tag, _sep, kind = fh.read().strip().rpartition(" ")
            return tag, kind
        except (OSError, ValueError):
            return None, None

    def is_up(self) -> bool:
        return bool(self.hosts) and all(h.alive() for h in self.hosts)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        os.makedirs(STATE_ROOT, mode=0o711, exist_ok=True)
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ up
    def preflight(self, n: int, profiles: Sequence[Profile], first: int = 1) -> None:
        problems = []
        if os.geteuid() != 0:
            problems.append("the fleet needs root")
        for b in REQUIRED:
            if shutil.which(b) is None:
                problems.append(f"{b} not found on PATH")
        for p in (SSHD_BINARY, SYSTEM_PYTHON):
            if not os.access(p, os.X_OK):
                problems.append(f"{p} missing")
        if not os.path.exists("/proc/self/loginuid"):
            problems.append("no kernel audit support (/proc/self/loginuid)")
        with open("/proc/filesystems") as fh:
            if "overlay" not in fh.read() and any(p.hide_psutil for p in profiles):
                problems.append("overlayfs unavailable (needed to hide psutil on a host)")
        if n < 1 or first < 1 or first + n - 1 > MAX_HOSTS:
            problems.append(f"hosts {first}..{first + n - 1} outside 1..{MAX_HOSTS}")
        for prof in profiles:
            try:
                prof.interpreter()
            except FleetError as exc:
                problems.append(str(exc))
        if any(p.hide_psutil or (p.python == "system" and p.psutil) for p in profiles):
            if subprocess.run([SYSTEM_PYTHON, "-c", "import psutil"], capture_output=True, check=False).returncode:
                problems.append(f"psutil not importable by {SYSTEM_PYTHON} (apt-get install python3-psutil; "
                                "tests/bootstrap.sh does)")
        for i in range(max(first, 1), min(first + n, MAX_HOSTS + 1)):
            if not _address_free(i):
                problems.append(f"{address_of(i)}:22 is taken; another fleet up? (fleets: "
                                f"{', '.join(glob.glob(STATE_ROOT + '/*/state.json')) or 'none'}; "
                                "Fleet.up(first=None) picks free addresses)")
        if problems:
            raise FleetError("fleet preflight failed:\n  - " + "\n  - ".join(problems))

    def up(self, n: int, profiles: Optional[Sequence[Union[str, Profile]]] = None, timeout: float = 120.0,
           first: Optional[int] = 1) -> "Fleet":
        """Bring up ``n`` hosts with indexes ``first``.. (host K is ``sghostKK`` on
        127.0.0.(K+1)); ``first=None`` picks the lowest block of ``n`` free addresses (so that
        test fleets can run next to a fleet started with the CLI). ``profiles`` (names or
        :class:`Profile`) are taken in turn; default :data:`PROFILES`. A no-op if exactly this
        fleet is already up."""
        profs = [PROFILE_BY_NAME[p] if isinstance(p, str) else p for p in (profiles or PROFILES)]
        with self._lock():
            self._load()
            if self.hosts:
                if self.is_up() and len(self.hosts) == n:
                    return self
                raise FleetError(f"a fleet with {len(self.hosts)} hosts is already recorded in "
                                 f"{self.state_dir}; bring it down first")
            if first is None:
                first = _free_block(n)
            self.preflight(n, profs, first)
            clock = Stopwatch()
            try:
                self._up(n, profs, timeout, first)
            except BaseException:
                try:
                    self._down(timeout=30.0)
                except Exception:  # pylint: disable=broad-except
                    pass
                raise
            self.timings["up"] = clock.elapsed()
        return self

    def _up(self, n: int, profs: Sequence[Profile], timeout: float, first: int) -> None:
        clock = Stopwatch()
        deadline = time.monotonic() + timeout
        sd = self.state_dir
        if os.path.exists(sd):
            safe_rmtree(sd)  # leftovers of a fleet that is not up (state.json absent)
        os.makedirs(sd, mode=0o700)
        os.chmod(sd, 0o700)
        with open(os.path.join(sd, "owner"), "w") as fh:
            fh.write(f"{owner_tag()} {self.kind}\n")
        for d in ("ops", "users", "hosts", "scopes", "cp"):
            os.mkdir(os.path.join(sd, d), 0o700)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sgfleet-ops", "-f", self.ops_key_path])
        template = os.path.join(sd, "template")
        self._make_template(template)
        self.timings["template"] = clock.elapsed()

        # Per-host file systems: /etc is an overlay (upper layer per host) on the template's
        # /etc copy, which stays in place (untouched) until down; /home is copied (ops only).
        indexes = list(range(first, first + n))
        names = [host_name(i) for i in indexes]
        hostdirs = {name: os.path.join(sd, "hosts", name) for name in names}
        for hd in hostdirs.values():
            os.mkdir(hd, 0o755)
        _run_parallel([["cp", "-a", os.path.join(template, "home"), hd] for hd in hostdirs.values()])
        self.timings["copy"] = clock.elapsed()
        keygens = []
        records = []
        for k, (i, name) in enumerate(zip(indexes, names)):
            prof = profs[k % len(profs)]
            hd = hostdirs[name]
            self._customize_host(i, name, hd, prof, os.path.join(template, "etc"))
            keygens.append(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
                            "-f", os.path.join(hd, "etc-upper/ssh/ssh_host_ed25519_key")])
            records.append({"index": i, "name": name, "hostname": name, "address": address_of(i),
                            "hostdir": hd, "profile": prof.name,
                            "profile_spec": {"name": prof.name, "python": prof.python, "psutil": prof.psutil,
                                             "hide_psutil": prof.hide_psutil, "groups": list(prof.groups)},
                            "python": prof.interpreter(), "psutil": prof.psutil, "groups": list(prof.groups)})
        _run_parallel(keygens)
        self.timings["prepare"] = clock.elapsed()

        # Start every host's init at once.
        for rec in records:
            log = open(os.path.join(rec["hostdir"], "init.log"), "ab")
            try:
                p = subprocess.Popen(
                    ["unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc", "--propagation", "private",
                     "--kill-child=SIGKILL", SYSTEM_PYTHON, "-I", "-S", HOSTINIT,
                     os.path.join(rec["hostdir"], "config.json")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}, close_fds=True)
            finally:
                log.close()
            self._unshare[rec["name"]] = p
            rec["unshare_pid"] = p.pid
            rec["unshare_start"] = procfs.starttime(p.pid)
        pending = {rec["name"]: rec for rec in records}
        ready: Dict[str, FleetHost] = {}
        while pending:
            for name, rec in list(pending.items()):
                p = self._unshare[name]
                if p.poll() is not None:
                    raise FleetError(f"host {name} died during start (exit {p.returncode}):\n"
                                     + _tail(os.path.join(rec["hostdir"], "init.log"))
                                     + _tail(os.path.join(rec["hostdir"], "sshd.log")))
                if "init_pid" not in rec:
                    kids = _children(p.pid)
                    if not kids:
                        continue
                    rec["init_pid"] = kids[0]
                    rec["init_start"] = procfs.starttime(kids[0])
                    rec["ns"] = {k: _ns_link(kids[0], k) for k in NAMESPACES}
                    if None in rec["ns"].values() or rec["ns"]["pid"] == _ns_link(os.getpid(), "pid"):
                        del rec["init_pid"]
                        continue
                    self.hosts.append(FleetHost(self, rec))
                    self._save()  # recorded as soon as it exists, so down() finds it
                host = self.host(name)
                if host.sshd.listening():
                    ready[name] = host
                    del pending[name]
            if pending and time.monotonic() > deadline:
                detail = "\n".join(f"{name}:\n{_tail(os.path.join(rec['hostdir'], 'init.log'))}"
                                   f"{_tail(os.path.join(rec['hostdir'], 'sshd.log'))}"
                                   for name, rec in pending.items())
                raise FleetError(f"hosts not up after {timeout:.0f}s: {', '.join(pending)}\n{detail}")
            if pending:
                time.sleep(0.05)
        self.hosts.sort(key=lambda h: h.index)
        self._save()
        self.write_inventory()
        self.timings["start"] = clock.elapsed()

    def _make_template(self, template: str) -> None:
        """/etc copy with the ops account, its sudo rule and key; no foreign host keys or
        throw-away sgtest accounts."""
        os.mkdir(template, 0o755)
        _run(["cp", "-a", "/etc", os.path.join(template, "etc")])
        etc = os.path.join(template, "etc")
        os.mkdir(os.path.join(template, "home"), 0o755)
        _drop_tagged_accounts(etc)
        for key in glob.glob(os.path.join(etc, "ssh", "ssh_host_*")):
            os.unlink(key)
        for conf in glob.glob(os.path.join(etc, "ssh", "sshd_config.d", "*")):
            os.unlink(conf)
        os.makedirs(os.path.join(etc, "ssh", "authorized_keys"), mode=0o755, exist_ok=True)
        uid = _free_id(etc, OPS_UID_FROM)
        _run(["useradd", "--prefix", template, "-m", "-u", str(uid), "-U", "-s", "/bin/bash",
              "-c", "sessionguard fleet operator", OPS_USER])
        _write(os.path.join(etc, "sudoers.d", "sgfleet-ops"),
               f"# sessionguard fleet: Ansible logs in as {OPS_USER} and becomes root\n"
               f"{OPS_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
        ssh_dir = os.path.join(template, "home", OPS_USER, ".ssh")
        os.mkdir(ssh_dir, 0o700)
        os.chown(ssh_dir, uid, uid)
        with open(self.ops_key_path + ".pub") as fh:
            _write(os.path.join(ssh_dir, "authorized_keys"), fh.read(), 0o600, uid, uid)

    def _customize_host(self, index: int, name: str, hd: str, prof: Profile, lower_etc: str) -> None:
        address = address_of(index)
        # The host's /etc: template/etc (lower, shared, never written) + etc-upper (this
        # host's changes: copy-on-write, so every host has its own account database).
        etc = os.path.join(hd, "etc-upper")
        os.mkdir(etc, 0o755)
        os.mkdir(os.path.join(hd, "etc-work"), 0o700)
        os.mkdir(os.path.join(etc, "ssh"), 0o755)
        _write(os.path.join(etc, "hostname"), name + "\n")
        _write(os.path.join(etc, "hosts"),
               f"127.0.0.1\tlocalhost\n{address}\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        _write(os.path.join(etc, "machine-id"), uuid.uuid4().hex + "\n", 0o444)
        _write(os.path.join(etc, "ssh", "sshd_config"), sshd_config(name, address), 0o644)
        for d, mode in (("tmp", 0o1777), ("root", 0o711), ("var-log", 0o755), ("var-tmp", 0o1777)):
            path = os.path.join(hd, d)
            os.mkdir(path)
            os.chmod(path, mode)
        os.mkdir(os.path.join(hd, "root", ".pyenv"), 0o755)
        utmp_gid = _group_gid(lower_etc, "utmp")
        for f, mode in (("wtmp", 0o664), ("btmp", 0o660), ("lastlog", 0o664)):
            _write(os.path.join(hd, "var-log", f), "", mode, 0, utmp_gid)
        binds = []
        if os.path.isdir(PYENV_ROOT):
            # /root/.pyenv (read-only) stays reachable below the host's own /root, which is
            # 0711: the pyenv interpreters' RUNPATH is /root/.pyenv/versions/X/lib, and the
            # unprivileged ops user must be able to run them.
            binds.append({"source": PYENV_ROOT, "target": os.path.join(hd, "root", ".pyenv"),
                          "recursive": True, "readonly": True})
        binds += [
            {"source": os.path.join(hd, "root"), "target": "/root", "recursive": True},
            {"source": "overlay", "target": "/etc", "fstype": "overlay",
             "data": f"lowerdir={lower_etc},upperdir={etc},workdir={os.path.join(hd, 'etc-work')}"},
            {"source": os.path.join(hd, "home"), "target": "/home"},
            {"source": os.path.join(hd, "var-log"), "target": "/var/log"},
            {"source": os.path.join(hd, "var-tmp"), "target": "/var/tmp"},
        ]
        binds += private_var_binds(hd)
        hide = []
        if prof.hide_psutil:
            dist = "/usr/lib/python3/dist-packages"
            names = sorted(e for e in os.listdir(dist) if e == "psutil" or e.startswith("psutil-"))
            hide.append({"dir": dist, "names": names})
        cfg = {
            "name": name, "hostname": name, "address": address,
            "log": os.path.join(hd, "init.log"), "sshd_log": os.path.join(hd, "sshd.log"),
            "binds": binds, "hide": hide,
            "late_binds": [{"source": os.path.join(hd, "tmp"), "target": "/tmp"}],
            "sshd": [SSHD_BINARY, "-D", "-e", "-f", "/etc/ssh/sshd_config"],
        }
        _write(os.path.join(hd, "config.json"), json.dumps(cfg, indent=1) + "\n", 0o600)

    # ------------------------------------------------------------------ down
    def down(self, timeout: float = 30.0, check: bool = True) -> List[str]:
        """Stop every host and client-side process of the fleet by PID, verify that nothing
        is left (:meth:`leftovers`), remove the state dir. Returns the problems found
        (raises :class:`FleetError` with them when ``check``); the state dir is kept then."""
        with self._lock():
            self._load_if_needed()
            problems = self._down(timeout)
        if check and problems:
            raise FleetError(f"fleet down left things behind (state dir kept: {self.state_dir}):\n  "
                             + "\n  ".join(problems))
        return problems

    def _load_if_needed(self) -> None:
        if not self.hosts:
            self._load()

    def _down(self, timeout: float) -> List[str]:
        clock = Stopwatch()
        problems: List[str] = []
        for scope in reversed(self.scopes):
            try:
                scope.close_sessions()
            except Exception as exc:  # pylint: disable=broad-except
                problems.append(f"closing sessions of {scope!r}: {exc}")
        inits = [procfs.read_proc(h.init_pid) for h in self.hosts if h.alive()]
        inits = [p for p in inits if p is not None]
        for h in self.hosts:
            h.signal_init(signal.SIGTERM)
        try:
            procfs.wait_gone(inits, timeout)
        except AssertionError:
            procfs.kill_procs(inits, signal.SIGKILL)  # the kernel then kills the whole namespace
            try:
                procfs.wait_gone(inits, 10)
            except AssertionError as exc:
                problems.append(str(exc))
        for h in self.hosts:
            p = self._unshare.get(h.name)
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    procfs.signal_proc(p.pid, h.unshare_start, signal.SIGKILL)
                    p.wait(5)
            elif procfs.alive(h.unshare_pid, h.unshare_start):
                procfs.signal_proc(h.unshare_pid, h.unshare_start, signal.SIGKILL)
        self._unshare.clear()
        # Client-side processes (tmux servers, mosh/ssh clients, Ansible's ssh masters...):
        # everything that mentions the state dir (keys, sockets), except this process and
        # its ancestors.
        spare = _ancestors(os.getpid())
        strays = [p for p in procfs.iter_procs() if p.pid not in spare and not p.zombie
                  and any(self.state_dir in a for a in p.cmdline)]
        procfs.kill_procs(strays, signal.SIGKILL)
        try:
            procfs.wait_gone(strays, 10)
        except AssertionError as exc:
            problems.append(str(exc))
        # Our own unshare processes are reaped above; those of a fleet brought up by another
        # (now gone) process are zombies until PID 1 reaps them (slowly, on this machine).
        try:
            wait_for(lambda: not any(procfs.starttime(h.unshare_pid) == h.unshare_start for h in self.hosts),
                     15, "unshare processes of the fleet to be reaped", max_interval=0.5)
        except AssertionError:
            pass  # reported by leftovers()
        problems += self.leftovers()
        self.timings["down"] = clock.elapsed()
        if not problems:
            safe_rmtree(self.state_dir)
            self.hosts = []
            self.users = []
        return problems

    def leftovers(self) -> List[str]:
        """What of this fleet still exists: live processes in its namespaces or mentioning its
        state dir, unreaped init/unshare processes, mounts (in any mount namespace) of its
        host directories, bound unix sockets (tmux) below the state dir."""
        out: List[str] = []
        ns_ids = {kind: {h.namespaces.get(kind) for h in self.hosts} - {None} for kind in NAMESPACES}
        spare = _ancestors(os.getpid())
        mnt_seen: Dict[str, int] = {}
        for p in procfs.iter_procs():
            for h in self.hosts:
                if p.pid in (h.init_pid, h.unshare_pid) and p.starttime in (h.init_starttime, h.unshare_start):
                    out.append(f"{h.name}: {'init' if p.pid == h.init_pid else 'unshare'} process still exists "
                               f"(state {p.state}): {p}")
            if p.zombie:
                continue
            for kind in NAMESPACES:
                link = _ns_link(p.pid, kind)
                if link is not None and link in ns_ids[kind]:
                    out.append(f"process in a fleet {kind} namespace {link}: {p}")
                    break
            if p.pid not in spare and any(self.state_dir in a for a in p.cmdline):
                out.append(f"process mentioning {self.state_dir}: {p}")
            mnt = _ns_link(p.pid, "mnt")
            if mnt is not None:
                mnt_seen.setdefault(mnt, p.pid)
        for mnt, pid in mnt_seen.items():
            for line in _mounts_touching([self.state_dir], pid):
                out.append(f"mount in {mnt} (seen by PID {pid}): {line}")
        try:
            with open("/proc/net/unix") as fh:
                for line in fh.read().splitlines()[1:]:
                    f = line.split()
                    if len(f) >= 8 and f[7].startswith(self.state_dir + "/"):
                        out.append(f"unix socket still bound: {f[7]}")
        except OSError:
            pass
        return out

    # ------------------------------------------------------------------ status
    def status(self) -> List[Dict[str, object]]:
        """One dict per host: name, address, profile, python, init alive, sshd answers."""
        out = []
        for h in self.hosts:
            alive = h.alive()
            out.append({"name": h.name, "address": h.address, "profile": h.profile.name, "python": h.python,
                        "psutil": h.psutil, "groups": list(h.groups), "init_pid": h.init_pid, "init_alive": alive,
                        "sshd_pid": h.sshd.refresh() if alive else None,
                        "sshd_answers": alive and h.sshd_answers()})
        return out

    # ------------------------------------------------------------------ users and sessions
    def create_user(self, name: Optional[str] = None, hosts: Optional[Iterable[Union[int, str, FleetHost]]] = None, *,
                    prefix: str = "sgf", shell: str = "/bin/bash", authorize: bool = True,
                    uid: Optional[int] = None):
        """Create one account (same name, UID and ssh key) on ``hosts`` (default: every host;
        it stays absent on the others). Returns a :class:`sgfleet.FleetUser`; ``user.on(host)``
        is the :class:`sgtest.TestUser` on that host. Not destroyed automatically (scopes do
        that; ``down`` takes it with the hosts)."""
        from .users import create_fleet_user  # pylint: disable=import-outside-toplevel
        user = create_fleet_user(self, name, self.resolve(hosts), prefix=prefix, shell=shell,
                                 authorize=authorize, uid=uid)
        self.users.append(user)
        return user

    def scope(self, name: str):
        """A :class:`sgfleet.FleetScope`: users and sessions torn down (and verified) together."""
        from .scope import FleetScope  # pylint: disable=import-outside-toplevel
        return FleetScope(self, name)

    @property
    def default_scope(self):
        if self._default_scope is None:
            self._default_scope = self.scope("default")
        return self._default_scope

    def mosh(self, user, host=None, **kw):
        """``default_scope.mosh``: a connected :class:`sgtest.MoshSession` (closed at down)."""
        return self.default_scope.mosh(user, host, **kw)

    def ssh(self, user, host=None, **kw):
        """``default_scope.ssh``: a connected :class:`sgtest.SshSession` (closed at down)."""
        return self.default_scope.ssh(user, host, **kw)

    def ansible(self, pattern: str, module: str, args: Optional[str] = None, **kw):
        """Ad-hoc ``ansible`` run on this fleet's inventory (:func:`sgfleet.ansible.adhoc`)."""
        from .ansible import adhoc  # pylint: disable=import-outside-toplevel
        return adhoc(self.inventory_path, pattern, module, args, **kw)

    def playbook(self, plays: Sequence[dict], **kw):
        """``ansible-playbook`` run of ``plays`` on this fleet's inventory (:func:`sgfleet.ansible.playbook`)."""
        from .ansible import playbook  # pylint: disable=import-outside-toplevel
        return playbook(self.inventory_path, plays, **kw)

    def __repr__(self) -> str:
        return f"<Fleet {self.state_dir} hosts={len(self.hosts)}>"


# --------------------------------------------------------------------------- addresses


def _address_free(index: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address_of(index), 22))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _recorded_indexes() -> Set[int]:
    """Host indexes used by any fleet recorded under STATE_ROOT (up or not yet down)."""
    used: Set[int] = set()
    for path in glob.glob(os.path.join(STATE_ROOT, "*", "state.json")):
        try:
            with open(path) as fh:
                used |= {h["index"] for h in json.load(fh)["hosts"]}
        except (OSError, ValueError, KeyError):
            continue
    return used


def _free_block(n: int) -> int:
    used = _recorded_indexes()
    for first in range(1, MAX_HOSTS - n + 2):
        block = range(first, first + n)
        if not used.intersection(block) and all(_address_free(i) for i in block):
            return first
    raise FleetError(f"no block of {n} free loopback addresses for a fleet")


# --------------------------------------------------------------------------- account files


def _read_db(path: str) -> List[List[str]]:
    with open(path) as fh:
        return [line.rstrip("\n").split(":") for line in fh if line.strip()]


def _group_gid(etc: str, name: str) -> int:
    for f in _read_db(os.path.join(etc, "group")):
        if f[0] == name:
            return int(f[2])
    raise FleetError(f"group {name} missing in {etc}/group")


def _free_id(etc: str, start: int) -> int:
    used = {int(f[2]) for f in _read_db(os.path.join(etc, "passwd")) if len(f) > 2 and f[2].isdigit()}
    used |= {int(f[2]) for f in _read_db(os.path.join(etc, "group")) if len(f) > 2 and f[2].isdigit()}
    i = start
    while i in used:
        i += 1
    return i


def _drop_tagged_accounts(etc: str) -> None:
    """Remove throw-away sgtest accounts (GECOS ``sgtest owner ...``) from an /etc copy."""
    passwd = _read_db(os.path.join(etc, "passwd"))
    names = {f[0] for f in passwd if len(f) > 4 and f[4].startswith(OWNER_TAG)}
    if not names:
        return
    for db in ("passwd", "shadow", "group", "gshadow"):
        path = os.path.join(etc, db)
        if not os.path.exists(path):
            continue
        st = os.stat(path)
        keep = [f for f in _read_db(path) if f[0] not in names]
        _write(path, "".join(":".join(f) + "\n" for f in keep), st.st_mode & 0o7777, st.st_uid, st.st_gid)


def sshd_config(name: str, address: str) -> str:
    return f"""\
# sshd of fleet host {name} (written by tests/fleet); run by the host's init as sshd -D -e
# First, as in Debian's sshd_config (the directory starts empty on every host).
Include /etc/ssh/sshd_config.d/*.conf
Port 22
ListenAddress {address}
AddressFamily inet
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
UsePAM yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%u
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 50
LoginGraceTime 30
AcceptEnv LANG LC_*
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def _tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, errors="replace") as fh:
            text = fh.read()
    except OSError:
        return ""
    return f"--- {path} (tail)\n{text[-n:]}\n"


# --------------------------------------------------------------------------- stale fleets


def purge_stale_fleets(kinds: Sequence[str] = ("pytest",)) -> List[str]:
    """Bring down fleets of the given kinds whose owner process is gone (crashed test runs)."""
    done = []
    for owner_file in glob.glob(os.path.join(STATE_ROOT, "*", "owner")):
        sd = os.path.dirname(owner_file)
        f = Fleet(sd)
        tag, kind = f.owner()
        if tag is None or kind not in kinds or owner_alive(tag):
            continue
        problems = f.down(check=False)
        done.append(f"{sd}: {'clean' if not problems else '; '.join(problems)}")
    return done


def new_state_dir(prefix: str = "pt") -> str:
    """A fresh, short state dir below STATE_ROOT (tmux socket paths must stay short)."""
    os.makedirs(STATE_ROOT, mode=0o711, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=STATE_ROOT)


__all__ = ["Fleet", "FleetError", "FleetHost", "HostSshd", "Profile", "PROFILES", "address_of", "host_name",
           "new_state_dir", "purge_stale_fleets", "pyenv_python", "render_inventory", "safe_rmtree", "sshd_config"]

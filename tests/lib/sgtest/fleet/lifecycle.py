"""Bringing a fleet's hosts up and down, and proving that nothing of a fleet is left.

Each host is started as ``unshare --pid --mount --uts --fork --mount-proc --propagation private
--kill-child /usr/bin/python3 -I -S hostinit.py HOSTDIR/config.json``: the init is PID 1 of the new
PID namespace and starts the host's sshd. Down sends the inits SIGTERM (SIGKILL after a deadline:
the kernel then kills the whole namespace) and SIGKILLs, by PID, every process on the machine that
mentions the state dir (tmux servers, clients, Ansible's ssh masters).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Dict, List, Sequence, Set

from .. import procfs
from ..host import HarnessError, LocalHost
from ..interpreters import SYSTEM_PYTHON
from ..waiting import wait_for
from .addresses import MAX_HOSTS, address_free, address_of
from .hosts import NAMESPACES, FleetHost
from .mounts import mounts_touching
from .profiles import Profile

if TYPE_CHECKING:  # pragma: no cover
    from .fleet import Fleet

HOSTINIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostinit.py")
STATE_ROOT = "/tmp/sessionguard-fleet"
DEFAULT_STATE_DIR = os.path.join(STATE_ROOT, "default")
LOCK_PATH = os.path.join(STATE_ROOT, ".lock")
REQUIRED = ("unshare", "nsenter", "setpriv", "cp", "groupadd", "sudo")


def new_state_dir(prefix: str = "pt") -> str:
    """A fresh, short state dir below STATE_ROOT (tmux socket paths must stay short)."""
    os.makedirs(STATE_ROOT, mode=0o711, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=STATE_ROOT)


def recorded_indexes() -> Set[int]:
    """Host indexes used by any fleet recorded under STATE_ROOT (up or not yet down)."""
    used: Set[int] = set()
    for path in glob.glob(os.path.join(STATE_ROOT, "*", "state.json")):
        try:
            with open(path) as fh:
                used |= {h["index"] for h in json.load(fh)["hosts"]}
        except (OSError, ValueError, KeyError):
            continue
    return used


def _tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, errors="replace") as fh:
            return f"--- {path} (tail)\n{fh.read()[-n:]}\n"
    except OSError:
        return ""


def _logs(rec: dict) -> str:
    return _tail(os.path.join(rec["hostdir"], "init.log")) + _tail(os.path.join(rec["hostdir"], "sshd.log"))


# --------------------------------------------------------------------------- up


def preflight(n: int, profiles: Sequence[Profile], first: int = 1) -> None:
    """Raise :class:`HarnessError` listing everything missing for ``n`` hosts from index ``first``."""
    problems = []
    try:
        LocalHost().preflight()  # root, sshd, mosh, tmux, audit loginuid, pam_loginuid...
    except HarnessError as exc:
        problems.append(str(exc))
    problems += [f"{b} not found on PATH" for b in REQUIRED if shutil.which(b) is None]
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        problems.append(f"{SYSTEM_PYTHON} missing")
    with open("/proc/filesystems") as fh:
        if "overlay" not in fh.read():
            problems.append("overlayfs unavailable (every host's /etc is an overlay)")
    if n < 1 or first < 1 or first + n - 1 > MAX_HOSTS:
        problems.append(f"hosts {first}..{first + n - 1} outside 1..{MAX_HOSTS}")
    for prof in profiles:
        try:
            prof.interpreter()
        except HarnessError as exc:
            problems.append(str(exc))
    if any(p.hide_psutil or (p.python == "system" and p.psutil) for p in profiles):
        if subprocess.run([SYSTEM_PYTHON, "-c", "import psutil"], capture_output=True, check=False).returncode:
            problems.append(f"psutil not importable by {SYSTEM_PYTHON} (apt-get install python3-psutil; "
                            "tests/bootstrap.sh does)")
    for i in range(max(first, 1), min(first + n, MAX_HOSTS + 1)):
        if not address_free(i):
            problems.append(f"{address_of(i)}:22 is taken; another fleet up? (fleets: "
                            f"{', '.join(glob.glob(STATE_ROOT + '/*/state.json')) or 'none'}; "
                            "Fleet.up(first=None) picks free addresses)")
    if problems:
        raise HarnessError("fleet preflight failed:\n  - " + "\n  - ".join(problems))


def start_hosts(fleet: "Fleet", records: List[dict], timeout: float) -> None:
    """Start every host's init at once; record each host as soon as its init exists (so that down
    finds it), and return once every host's sshd answers."""
    deadline = time.monotonic() + timeout
    for rec in records:
        with open(os.path.join(rec["hostdir"], "init.log"), "ab") as log:
            p = subprocess.Popen(
                ["unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc", "--propagation", "private",
                 "--kill-child=SIGKILL", SYSTEM_PYTHON, "-I", "-S", HOSTINIT, os.path.join(rec["hostdir"], "config.json")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}, close_fds=True)
        fleet.unshare[rec["name"]] = p
        rec["unshare_pid"] = p.pid
        rec["unshare_start"] = procfs.starttime(p.pid)
    my_pidns = procfs.ns_link(os.getpid(), "pid")
    pending = {rec["name"]: rec for rec in records}
    while pending:
        for name, rec in list(pending.items()):
            p = fleet.unshare[name]
            if p.poll() is not None:
                raise HarnessError(f"host {name} died during start (exit {p.returncode}):\n{_logs(rec)}")
            if "init_pid" not in rec:
                kids = procfs.child_pids(p.pid)
                if not kids:
                    continue
                ns = {k: procfs.ns_link(kids[0], k) for k in NAMESPACES}
                if None in ns.values() or ns["pid"] == my_pidns:
                    continue  # not yet in its own namespaces
                rec.update(init_pid=kids[0], init_start=procfs.starttime(kids[0]), ns=ns)
                fleet.hosts.append(FleetHost(fleet, rec))
                fleet.save()
            if fleet.host(name).sshd.listening():
                del pending[name]
        if pending and time.monotonic() > deadline:
            detail = "\n".join(f"{name}:\n{_logs(rec)}" for name, rec in pending.items())
            raise HarnessError(f"hosts not up after {timeout:.0f}s: {', '.join(pending)}\n{detail}")
        if pending:
            time.sleep(0.05)
    fleet.hosts.sort(key=lambda h: h.index)
    fleet.save()


# --------------------------------------------------------------------------- down


def _state_dir_processes(state_dir: str) -> List[procfs.Proc]:
    """Live processes whose argv mentions ``state_dir``, but this one and its parents."""
    spare = procfs.ancestors(os.getpid())
    return [p for p in procfs.iter_procs() if p.pid not in spare and not p.zombie
            and any(state_dir in a for a in p.cmdline)]


def stop_hosts(fleet: "Fleet", timeout: float) -> List[str]:
    """Stop every host and client-side process of the fleet by PID; returns the problems seen."""
    problems: List[str] = []
    for scope in reversed(fleet.scopes):
        problems += scope.close_sessions()
    inits = [p for p in (procfs.read_proc(h.init_pid) for h in fleet.hosts if h.alive()) if p is not None]
    for h in fleet.hosts:
        h.signal_init(signal.SIGTERM)
    try:
        procfs.wait_gone(inits, timeout)
    except AssertionError:
        procfs.kill_procs(inits, signal.SIGKILL)  # the kernel then kills the whole namespace
        try:
            procfs.wait_gone(inits, 10)
        except AssertionError as exc:
            problems.append(str(exc))
    for h in fleet.hosts:
        p = fleet.unshare.pop(h.name, None)
        if p is not None:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                procfs.signal_proc(p.pid, h.unshare_start, signal.SIGKILL)
                p.wait(5)
        elif procfs.alive(h.unshare_pid, h.unshare_start):
            procfs.signal_proc(h.unshare_pid, h.unshare_start, signal.SIGKILL)
    # Client-side processes (tmux servers, mosh/ssh clients, Ansible's ssh masters...).
    strays = _state_dir_processes(fleet.state_dir)
    procfs.kill_procs(strays, signal.SIGKILL)
    try:
        procfs.wait_gone(strays, 10)
    except AssertionError as exc:
        problems.append(str(exc))
    # Our own unshare processes are reaped above; those of a fleet brought up by another
    # (now gone) process are zombies until PID 1 reaps them (slowly, on this machine).
    try:
        wait_for(lambda: not any(procfs.starttime(h.unshare_pid) == h.unshare_start for h in fleet.hosts),
                 15, "unshare processes of the fleet to be reaped", max_interval=0.5)
    except AssertionError:
        pass  # reported by leftovers()
    return problems


def leftovers(fleet: "Fleet") -> List[str]:
    """What of ``fleet`` still exists: live processes in its namespaces or mentioning its state dir,
    unreaped init/unshare processes, mounts (in any mount namespace) of its host directories, bound
    unix sockets (tmux) below the state dir."""
    out: List[str] = []
    ns_ids = {kind: {h.namespaces.get(kind) for h in fleet.hosts} - {None} for kind in NAMESPACES}
    spare = procfs.ancestors(os.getpid())
    mnt_seen: Dict[str, int] = {}
    for p in procfs.iter_procs():
        for h in fleet.hosts:
            if p.pid in (h.init_pid, h.unshare_pid) and p.starttime in (h.init_starttime, h.unshare_start):
                out.append(f"{h.name}: {'init' if p.pid == h.init_pid else 'unshare'} process still exists "
                           f"(state {p.state}): {p}")
        if p.zombie:
            continue
        links = {kind: procfs.ns_link(p.pid, kind) for kind in NAMESPACES}
        kind = next((k for k in NAMESPACES if links[k] is not None and links[k] in ns_ids[k]), None)
        if kind is not None:
            out.append(f"process in a fleet {kind} namespace {links[kind]}: {p}")
        if p.pid not in spare and any(fleet.state_dir in a for a in p.cmdline):
            out.append(f"process mentioning {fleet.state_dir}: {p}")
        if links["mnt"] is not None:
            mnt_seen.setdefault(links["mnt"], p.pid)  # type: ignore[arg-type]
    for mnt, pid in mnt_seen.items():
        out += [f"mount in {mnt} (seen by PID {pid}): {line}" for line in mounts_touching([fleet.state_dir], pid)]
    for line in (procfs.read_file("/proc/net/unix") or "").splitlines()[1:]:
        f = line.split()
        if len(f) >= 8 and f[7].startswith(fleet.state_dir + "/"):
            out.append(f"unix socket still bound: {f[7]}")
    return out

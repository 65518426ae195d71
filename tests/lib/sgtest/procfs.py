"""Read the process table straight from /proc (no psutil) and signal processes safely.

Everything here addresses processes by PID *and* start time (``/proc/PID/stat``
field 22) or by pidfd, so a recycled PID is never mistaken for the original.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from .waiting import wait_for

PROC = "/proc"
AUDIT_UNSET = 4294967295  # (uint32)-1: loginuid / sessionid never set


@dataclass(frozen=True)
class Proc:
    """A snapshot of one process, read from /proc at one moment."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    tty_nr: int
    state: str
    comm: str
    starttime: int
    uids: Tuple[int, int, int, int]  # real, effective, saved, filesystem
    gids: Tuple[int, int, int, int]
    cmdline: Tuple[str, ...]
    loginuid: Optional[int]
    sessionid: Optional[int]
    # The procfs this snapshot was read from: "/proc", or e.g. "/proc/INIT/root/proc" for a
    # process of a namespaced host (then ``pid`` is the PID inside that host's PID namespace).
    proc_root: str = field(default=PROC, compare=False, repr=False)

    @property
    def uid(self) -> int:
        return self.uids[0]

    @property
    def euid(self) -> int:
        return self.uids[1]

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X", "x")

    @property
    def argv0(self) -> str:
        return self.cmdline[0] if self.cmdline else ""

    @property
    def cmd(self) -> str:
        return " ".join(self.cmdline) if self.cmdline else f"[{self.comm}]"

    def key(self) -> Tuple[int, int]:
        """(pid, starttime): identifies this process for its whole life."""
        return (self.pid, self.starttime)

    def alive(self, proc_root: Optional[str] = None) -> bool:
        """Still running (same start time)? Looks in the procfs it was read from by default."""
        return alive(self.pid, self.starttime, proc_root or self.proc_root)

    def __str__(self) -> str:  # handy in assertion messages
        return (f"pid={self.pid} ppid={self.ppid} uid={self.uid} state={self.state} "
                f"sid={self.sid} loginuid={self.loginuid} sessionid={self.sessionid} "
                f"comm={self.comm!r} cmd={self.cmd!r}")


def _read(path: str, mode: str = "r") -> Optional[str]:
    try:
        with open(path, mode) as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:  # ESRCH while exiting, EACCES never for root
        if exc.errno in (errno.ESRCH, errno.ENOENT, errno.EACCES, errno.EINVAL):
            return None
        raise


def _read_bytes(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOENT, errno.EACCES, errno.EINVAL):
            return None
        raise


def parse_stat(text: str) -> Dict[str, object]:
    """Parse /proc/PID/stat; comm may contain spaces and parentheses."""
    lpar = text.index("(")
    rpar = text.rindex(")")
    comm = text[lpar + 1:rpar]
    rest = text[rpar + 2:].split()
    # rest[0] is field 3 (state); field N is rest[N-3]
    return {
        "pid": int(text[:lpar]),
        "comm": comm,
        "state": rest[0],
        "ppid": int(rest[1]),
        "pgid": int(rest[2]),
        "sid": int(rest[3]),
        "tty_nr": int(rest[4]),
        "starttime": int(rest[19]),
    }


def _int_file(path: str) -> Optional[int]:
    text = _read(path)
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def read_proc(pid: int, proc_root: str = PROC) -> Optional[Proc]:
    """Snapshot one process, or None if it does not exist (or vanished while reading)."""
    base = f"{proc_root}/{pid}"
    stat = _read(f"{base}/stat")
    status = _read(f"{base}/status")
    if stat is None or status is None:
        return None
    try:
        st = parse_stat(stat)
    except (ValueError, IndexError):
        return None
    uids = gids = (-1, -1, -1, -1)
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uids = tuple(int(x) for x in line.split()[1:5])  # type: ignore[assignment]
        elif line.startswith("Gid:"):
            gids = tuple(int(x) for x in line.split()[1:5])  # type: ignore[assignment]
    raw = _read_bytes(f"{base}/cmdline") or b""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    cmdline = tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0")) if raw else ()
    return Proc(
        pid=pid,
        ppid=st["ppid"],  # type: ignore[arg-type]
        pgid=st["pgid"],  # type: ignore[arg-type]
        sid=st["sid"],  # type: ignore[arg-type]
        tty_nr=st["tty_nr"],  # type: ignore[arg-type]
        state=st["state"],  # type: ignore[arg-type]
        comm=st["comm"],  # type: ignore[arg-type]
        starttime=st["starttime"],  # type: ignore[arg-type]
        uids=uids,  # type: ignore[arg-type]
        gids=gids,  # type: ignore[arg-type]
        cmdline=cmdline,
        loginuid=_int_file(f"{base}/loginuid"),
        sessionid=_int_file(f"{base}/sessionid"),
        proc_root=proc_root,
    )


def all_pids(proc_root: str = PROC) -> List[int]:
    return sorted(int(d) for d in os.listdir(proc_root) if d.isdigit())


def iter_procs(proc_root: str = PROC) -> Iterator[Proc]:
    for pid in all_pids(proc_root):
        p = read_proc(pid, proc_root)
        if p is not None:
            yield p


def procs_of_uid(uid: int, include_zombies: bool = False, proc_root: str = PROC) -> List[Proc]:
    """Processes whose real, effective or saved UID is ``uid`` (read from status, not /proc owner)."""
    out = []
    for p in iter_procs(proc_root):
        if uid in p.uids[:3] and (include_zombies or not p.zombie):
            out.append(p)
    return out


def pids_of_uid(uid: int, include_zombies: bool = False, proc_root: str = PROC) -> List[int]:
    return [p.pid for p in procs_of_uid(uid, include_zombies, proc_root)]


def starttime(pid: int, proc_root: str = PROC) -> Optional[int]:
    text = _read(f"{proc_root}/{pid}/stat")
    if text is None:
        return None
    try:
        return int(parse_stat(text)["starttime"])  # type: ignore[arg-type]
    except (ValueError, IndexError):
        return None


def alive(pid: int, starttime_: Optional[int] = None, proc_root: str = PROC) -> bool:
    """True if ``pid`` exists, is not a zombie, and (if given) still has that start time."""
    text = _read(f"{proc_root}/{pid}/stat")
    if text is None:
        return False
    try:
        st = parse_stat(text)
    except (ValueError, IndexError):
        return False
    if st["state"] in ("Z", "X", "x"):
        return False
    return starttime_ is None or st["starttime"] == starttime_


def children(pid: int, procs: Optional[Sequence[Proc]] = None, proc_root: str = PROC) -> List[Proc]:
    procs = list(procs) if procs is not None else list(iter_procs(proc_root))
    return [p for p in procs if p.ppid == pid]


def descendants(pid: int, procs: Optional[Sequence[Proc]] = None, proc_root: str = PROC) -> List[Proc]:
    """All PPID-descendants of ``pid`` (not including ``pid``), breadth first."""
    procs = list(procs) if procs is not None else list(iter_procs(proc_root))
    by_parent: Dict[int, List[Proc]] = {}
    for p in procs:
        by_parent.setdefault(p.ppid, []).append(p)
    out: List[Proc] = []
    todo = [pid]
    seen: Set[int] = set()
    while todo:
        cur = todo.pop(0)
        for c in by_parent.get(cur, []):
            if c.pid not in seen:
                seen.add(c.pid)
                out.append(c)
                todo.append(c.pid)
    return out


def environ(pid: int, proc_root: str = PROC) -> Dict[str, str]:
    raw = _read_bytes(f"{proc_root}/{pid}/environ") or b""
    env = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return env


def exe(pid: int, proc_root: str = PROC) -> Optional[str]:
    try:
        return os.readlink(f"{proc_root}/{pid}/exe")
    except OSError:
        return None


def fd_targets(pid: int, proc_root: str = PROC) -> Dict[int, str]:
    out = {}
    base = f"{proc_root}/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for n in names:
        try:
            out[int(n)] = os.readlink(f"{base}/{n}")
        except OSError:
            pass
    return out


def socket_inodes(pid: int, proc_root: str = PROC) -> Set[int]:
    out = set()
    for target in fd_targets(pid, proc_root).values():
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _parse_inet_table(text: str, v6: bool) -> Dict[int, Tuple[str, int]]:
    """inode -> (local ip, local port) from /proc/net/{udp,tcp}{,6}."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local = parts[1]
        hexip, hexport = local.split(":")
        port = int(hexport, 16)
        if v6:
            words = [hexip[i:i + 8] for i in range(0, 32, 8)]
            raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
            import ipaddress
            ip = str(ipaddress.IPv6Address(raw))
        else:
            ip = ".".join(str(b) for b in bytes.fromhex(hexip)[::-1])
        out[int(parts[9])] = (ip, port)
    return out


def inet_sockets(pid: int, proto: str = "udp", proc_root: str = PROC) -> List[Tuple[str, int, int]]:
    """(local ip, local port, inode) of every ``proto`` ('udp' or 'tcp') socket ``pid`` holds."""
    inodes = socket_inodes(pid, proc_root)
    if not inodes:
        return []
    table: Dict[int, Tuple[str, int]] = {}
    for suffix, v6 in (("", False), ("6", True)):
        text = _read(f"{proc_root}/{pid}/net/{proto}{suffix}")
        if text:
            table.update(_parse_inet_table(text, v6))
    return [(table[i][0], table[i][1], i) for i in sorted(inodes) if i in table]


def udp_ports(pid: int, proc_root: str = PROC) -> Set[int]:
    return {port for _ip, port, _ino in inet_sockets(pid, "udp", proc_root)}


def has_ptmx(pid: int, proc_root: str = PROC) -> bool:
    """Holds a pty master, whatever path it was opened through: the kernel writes ``tty-index`` into
    fdinfo for pty masters only."""
    for fd in fd_targets(pid, proc_root):
        info = _read(os.path.join(proc_root, str(pid), "fdinfo", str(fd)))
        if info and "tty-index:" in info:
            return True
    return False


def find_by_argv(
    token: str,
    uid: Optional[int] = None,
    proc_root: str = PROC,
    extra: Optional[Callable[[Proc], bool]] = None,
) -> List[Proc]:
    """Live processes with an argv element exactly equal to ``token`` (optionally of ``uid``)."""
    out = []
    for p in iter_procs(proc_root):
        if p.zombie or token not in p.cmdline:
            continue
        if uid is not None and uid not in p.uids[:3]:
            continue
        if extra is not None and not extra(p):
            continue
        out.append(p)
    return out


def _stat_fields(pid: int, proc_root: str = PROC) -> Optional[Dict[str, object]]:
    text = _read(f"{proc_root}/{pid}/stat")
    if text is None:
        return None
    try:
        return parse_stat(text)
    except (ValueError, IndexError):
        return None


def stopped_procs(proc_root: str = PROC) -> List[Proc]:
    """Every process on the host in a job-control or tracing stop (state ``T`` or ``t``).

    One read of ``stat`` per process; only the stopped ones are read in full.
    """
    out = []
    for pid in all_pids(proc_root):
        st = _stat_fields(pid, proc_root)
        if st is not None and st["state"] in ("T", "t"):
            p = read_proc(pid, proc_root)
            if p is not None and p.state in ("T", "t"):
                out.append(p)
    return out


def cgroup2_mount() -> Optional[str]:
    """Where this machine's cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or a hybrid's
    ``/sys/fs/cgroup/unified``), or None."""
    text = _read(f"{PROC}/self/mountinfo") or ""
    for line in text.splitlines():
        left, _sep, right = line.partition(" - ")
        if right.split(" ")[:1] == ["cgroup2"]:
            return left.split(" ")[4]
    return None


def frozen_procs() -> List[Proc]:
    """Every live process of this machine whose cgroup v2 group is frozen (``cgroup.events``: ``frozen 1``).

    A cgroup-frozen task shows state ``S``, not ``T``: :func:`stopped_procs` does not see it.
    Local procfs only (the cgroup paths are resolved on this machine's cgroup2 mount).
    """
    mount = cgroup2_mount()
    if mount is None:
        return []
    frozen: Dict[str, bool] = {}
    out = []
    for pid in all_pids():
        text = _read(f"{PROC}/{pid}/cgroup")
        path = next((ln[3:] for ln in (text or "").splitlines() if ln.startswith("0::")), None)
        if not path or path == "/":
            continue
        if path not in frozen:
            events = _read(os.path.join(mount, path.lstrip("/"), "cgroup.events")) or ""
            frozen[path] = "frozen 1" in events.splitlines()
        if frozen[path]:
            p = read_proc(pid)
            if p is not None and not p.zombie:
                out.append(p)
    return out


def held_procs(proc_root: str = PROC) -> List[Proc]:
    """Processes that cannot run: stopped (``T``/``t``) or in a frozen cgroup v2 group (local machine)."""
    held = {p.key(): p for p in stopped_procs(proc_root)}
    if proc_root == PROC:
        held.update((p.key(), p) for p in frozen_procs())
    return sorted(held.values(), key=lambda p: p.pid)


# --------------------------------------------------------------------------- signalling


def signal_proc(pid: int, start: Optional[int], sig: int, proc_root: str = PROC) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start``.

    Uses a pidfd, so the check and the signal address the same process even if
    the PID is recycled in between. Returns True if the signal was delivered.

    With another ``proc_root`` (the procfs of a child PID namespace, where ``pid`` is the
    PID inside that namespace), the process is addressed by an open ``proc_root/pid``
    directory, which ``pidfd_send_signal(2)`` accepts like a pidfd.
    """
    if proc_root != PROC:
        return _signal_proc_dir(pid, start, sig, proc_root)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        raise
    try:
        if start is not None and starttime(pid, proc_root) != start:
            return False
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        os.close(fd)


def _signal_proc_dir(pid: int, start: Optional[int], sig: int, proc_root: str) -> bool:
    try:
        fd = os.open(f"{proc_root}/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, ProcessLookupError):
        return False
    try:
        if start is not None:
            try:
                sfd = os.open("stat", os.O_RDONLY, dir_fd=fd)
            except (FileNotFoundError, ProcessLookupError):
                return False
            try:
                text = os.read(sfd, 4096).decode("utf-8", "replace")
            except ProcessLookupError:
                return False
            finally:
                os.close(sfd)
            try:
                if int(parse_stat(text)["starttime"]) != start:  # type: ignore[arg-type]
                    return False
            except (ValueError, IndexError):
                return False
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        os.close(fd)


def kill_procs(procs: Iterable[Proc], sig: int = signal.SIGKILL, proc_root: Optional[str] = None) -> List[Proc]:
    """Signal each snapshot (pid + start time). Returns those that were signalled.

    Each snapshot is addressed in the procfs it was read from unless ``proc_root`` is given.
    """
    return [p for p in procs if signal_proc(p.pid, p.starttime, sig, proc_root or p.proc_root)]


def wait_gone(procs: Iterable[Proc], timeout: float = 10.0, proc_root: Optional[str] = None) -> None:
    procs = list(procs)
    wait_for(lambda: not any(p.alive(proc_root) for p in procs), timeout,
             lambda: "processes to exit: " + "; ".join(str(p) for p in procs if p.alive(proc_root)))


def _kill_all_as(uid: int, gid: int) -> None:
    """kill(-1, SIGKILL) from a child running as ``uid``: atomic against fork for that UID."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.waitpid(pid, 0)


def kill_uid(uid: int, timeout: float = 15.0, gid: Optional[int] = None,
             wait_zombies: float = 0.0, proc_root: str = PROC,
             killer: Optional[Callable[[int, int], None]] = None) -> List[Proc]:
    """SIGKILL every process of ``uid`` and verify none is left. Never matches by name.

    First the kernel's ``kill(-1)`` with the user's UID (atomic against fork),
    then a /proc re-scan that SIGKILLs stragglers by pidfd (e.g. processes with
    only an effective UID of ``uid``), until no live process of the UID remains.
    With ``wait_zombies`` > 0, also wait (best effort) that long for zombies of
    the UID to be reaped. Returns the snapshots of what was found alive at first.

    ``killer(uid, gid)`` replaces the local ``kill(-1)`` (a namespaced host runs it inside
    its PID namespace, so that the same UID on other hosts is left alone).
    """
    if uid == 0:
        raise ValueError("refusing to kill every process of UID 0")
    first = procs_of_uid(uid, proc_root=proc_root)

    def _round() -> bool:
        (killer or _kill_all_as)(uid, uid if gid is None else gid)
        rest = procs_of_uid(uid, proc_root=proc_root)
        kill_procs(rest, signal.SIGKILL, proc_root)
        return not procs_of_uid(uid, proc_root=proc_root)

    wait_for(_round, timeout, lambda: f"UID {uid} to have no live process; left: "
             + "; ".join(str(p) for p in procs_of_uid(uid, proc_root=proc_root)),
             interval=0.05)
    if wait_zombies > 0:
        try:
            wait_for(lambda: not procs_of_uid(uid, include_zombies=True, proc_root=proc_root),
                     wait_zombies, "zombies of UID to be reaped")
        except AssertionError:
            pass
    return first

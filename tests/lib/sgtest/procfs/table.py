"""The process table as /proc shows it: one :class:`Proc` snapshot per process, and queries over them.

Everything here addresses processes by PID *and* start time (``/proc/PID/stat`` field 22), so a
recycled PID is never mistaken for the original.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

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


def read_file(path: str, binary: bool = False):
    """A /proc file's content (str, or bytes when ``binary``), or None when the process is gone."""
    try:
        with open(path, "rb" if binary else "r") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:  # ESRCH while exiting, EACCES never for root
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


def stat_fields(pid: int, proc_root: str = PROC) -> Optional[Dict[str, object]]:
    """The parsed ``stat`` of ``pid``, or None if it does not exist."""
    text = read_file(f"{proc_root}/{pid}/stat")
    if text is None:
        return None
    try:
        return parse_stat(text)
    except (ValueError, IndexError):
        return None


def _int_file(path: str) -> Optional[int]:
    text = read_file(path)
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _ids(status: str, tag: str) -> Tuple[int, int, int, int]:
    for line in status.splitlines():
        if line.startswith(tag):
            return tuple(int(x) for x in line.split()[1:5])  # type: ignore[return-value]
    return (-1, -1, -1, -1)


def read_proc(pid: int, proc_root: str = PROC) -> Optional[Proc]:
    """Snapshot one process, or None if it does not exist (or vanished while reading)."""
    base = f"{proc_root}/{pid}"
    st = stat_fields(pid, proc_root)
    status = read_file(f"{base}/status")
    if st is None or status is None:
        return None
    raw = read_file(f"{base}/cmdline", binary=True) or b""
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
        uids=_ids(status, "Uid:"),
        gids=_ids(status, "Gid:"),
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
    return [p for p in iter_procs(proc_root) if uid in p.uids[:3] and (include_zombies or not p.zombie)]


def pids_of_uid(uid: int, include_zombies: bool = False, proc_root: str = PROC) -> List[int]:
    return [p.pid for p in procs_of_uid(uid, include_zombies, proc_root)]


def starttime(pid: int, proc_root: str = PROC) -> Optional[int]:
    st = stat_fields(pid, proc_root)
    return None if st is None else int(st["starttime"])  # type: ignore[arg-type]


def alive(pid: int, starttime_: Optional[int] = None, proc_root: str = PROC) -> bool:
    """True if ``pid`` exists, is not a zombie, and (if given) still has that start time."""
    st = stat_fields(pid, proc_root)
    if st is None or st["state"] in ("Z", "X", "x"):
        return False
    return starttime_ is None or st["starttime"] == starttime_


def children(pid: int, procs: Optional[Sequence[Proc]] = None, proc_root: str = PROC) -> List[Proc]:
    procs = list(procs) if procs is not None else list(iter_procs(proc_root))
    return [p for p in procs if p.ppid == pid]


def child_pids(pid: int, proc_root: str = PROC) -> List[int]:
    """PIDs of ``pid``'s children as the kernel lists them (``task/PID/children``): no table scan."""
    text = read_file(f"{proc_root}/{pid}/task/{pid}/children")
    return [int(x) for x in (text or "").split()]


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


def ancestors(pid: int) -> Set[int]:
    """``pid`` and its parents up to (not including) PID 1: the chain a cleanup must never signal."""
    out = set()
    while pid > 1:
        out.add(pid)
        p = read_proc(pid)
        if p is None:
            break
        pid = p.ppid
    return out


def environ(pid: int, proc_root: str = PROC) -> Dict[str, str]:
    raw = read_file(f"{proc_root}/{pid}/environ", binary=True) or b""
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


def ns_link(pid: int, kind: str) -> Optional[str]:
    """``pid:[4026531836]`` and the like: which ``kind`` namespace (pid, mnt, uts...) a process is in."""
    try:
        return os.readlink(f"{PROC}/{pid}/ns/{kind}")
    except OSError:
        return None


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

"""Signal processes safely: by PID *and* start time, through a handle that cannot be recycled."""

from __future__ import annotations

import os
import signal
from typing import Callable, Iterable, List, Optional

from ..waiting import wait_for
from .table import PROC, Proc, parse_stat, procs_of_uid


def signal_proc(pid: int, start: Optional[int], sig: int, proc_root: str = PROC) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start``.

    The process is addressed by an open ``proc_root/PID`` directory, which ``pidfd_send_signal(2)``
    accepts like a pidfd: the start-time check and the signal reach the same process even if the
    PID is recycled in between. That works alike for this machine's procfs and for the procfs of a
    child PID namespace (where ``pid`` is the PID inside it). Returns True if the signal was delivered.
    """
    try:
        fd = os.open(f"{proc_root}/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, ProcessLookupError):
        return False
    try:
        if start is not None and _start_of(fd) != start:
            return False
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        os.close(fd)


def _start_of(dir_fd: int) -> Optional[int]:
    """Start time of the process whose /proc directory ``dir_fd`` is (None once it is gone)."""
    try:
        sfd = os.open("stat", os.O_RDONLY, dir_fd=dir_fd)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        text = os.read(sfd, 4096).decode("utf-8", "replace")
    except ProcessLookupError:
        return None
    finally:
        os.close(sfd)
    try:
        return int(parse_stat(text)["starttime"])  # type: ignore[arg-type]
    except (ValueError, IndexError):
        return None


def kill_procs(procs: Iterable[Proc], sig: int = signal.SIGKILL, proc_root: Optional[str] = None) -> List[Proc]:
    """Signal each snapshot (pid + start time). Returns those that were signalled.

    Each snapshot is addressed in the procfs it was read from unless ``proc_root`` is given.
    """
    return [p for p in procs if signal_proc(p.pid, p.starttime, sig, proc_root or p.proc_root)]


def wait_gone(procs: Iterable[Proc], timeout: float = 10.0, proc_root: Optional[str] = None) -> None:
    procs = list(procs)
    wait_for(lambda: not any(p.alive(proc_root) for p in procs), timeout,
             lambda: "processes to exit: " + "; ".join(str(p) for p in procs if p.alive(proc_root)))


def kill_all_as(uid: int, gid: int) -> None:
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
        (killer or kill_all_as)(uid, uid if gid is None else gid)
        kill_procs(procs_of_uid(uid, proc_root=proc_root), signal.SIGKILL, proc_root)
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

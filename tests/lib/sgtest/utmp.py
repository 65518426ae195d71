"""Read (and, for teardown, retire) records of /run/utmp.

glibc x86_64 ``struct utmp`` is 384 bytes::

    short ut_type; (2 pad) pid_t ut_pid; char ut_line[32]; char ut_id[4];
    char ut_user[32]; char ut_host[256]; struct exit_status {short, short};
    int32 ut_session; struct {int32 tv_sec, tv_usec} ut_tv; int32 ut_addr_v6[4];
    char __unused[20];
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

UTMP_FORMAT = "<hxxi32s4s32s256shhiii4i20s"
UTMP_SIZE = struct.calcsize(UTMP_FORMAT)
assert UTMP_SIZE == 384, UTMP_SIZE

EMPTY, RUN_LVL, BOOT_TIME, NEW_TIME, OLD_TIME, INIT_PROCESS, LOGIN_PROCESS, USER_PROCESS, DEAD_PROCESS = range(9)

MOSH_HOST_RE = re.compile(r"^(?:(?P<ip>\S+) via )?mosh \[(?P<pid>\d+)\]$")


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class UtmpRecord:
    index: int
    type: int
    pid: int
    line: str
    id: str
    user: str
    host: str
    exit: Tuple[int, int]
    session: int
    tv_sec: int
    tv_usec: int
    addr_v6: Tuple[int, int, int, int]

    @property
    def live(self) -> bool:
        return self.type == USER_PROCESS

    @property
    def mosh_pid(self) -> Optional[int]:
        """PID named in a mosh host string (``mosh [PID]`` / ``IP via mosh [PID]``)."""
        m = MOSH_HOST_RE.match(self.host)
        return int(m.group("pid")) if m else None

    @property
    def mosh_client_ip(self) -> Optional[str]:
        m = MOSH_HOST_RE.match(self.host)
        return m.group("ip") if m else None

    @property
    def attached(self) -> bool:
        """True for an ``IP via mosh [PID]`` record (a client was heard from recently)."""
        return self.mosh_client_ip is not None


def parse(data: bytes) -> List[UtmpRecord]:
    out = []
    for i in range(len(data) // UTMP_SIZE):
        f = struct.unpack_from(UTMP_FORMAT, data, i * UTMP_SIZE)
        out.append(UtmpRecord(
            index=i, type=f[0], pid=f[1], line=_cstr(f[2]), id=_cstr(f[3]), user=_cstr(f[4]),
            host=_cstr(f[5]), exit=(f[6], f[7]), session=f[8], tv_sec=f[9], tv_usec=f[10],
            addr_v6=tuple(f[11:15]),  # type: ignore[arg-type]
        ))
    return out


def read_utmp(path: str = "/run/utmp") -> List[UtmpRecord]:
    with open(path, "rb") as fh:
        fcntl.lockf(fh, fcntl.LOCK_SH)
        try:
            return parse(fh.read())
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)


def records(path: str = "/run/utmp", *, user: Optional[str] = None, pid: Optional[int] = None,
            live_only: bool = True) -> List[UtmpRecord]:
    out = []
    for r in read_utmp(path):
        if live_only and not r.live:
            continue
        if user is not None and r.user != user:
            continue
        if pid is not None and r.pid != pid:
            continue
        out.append(r)
    return out


def mosh_record(server_pid: int, path: str = "/run/utmp") -> Optional[UtmpRecord]:
    """The live utmp record mosh-server ``server_pid`` wrote (``ut_pid`` is the daemon PID)."""
    for r in records(path, pid=server_pid):
        if r.mosh_pid is not None:
            return r
    return None


def retire_records(predicate: Callable[[UtmpRecord], bool], path: str = "/run/utmp") -> int:
    """Turn matching live records into DEAD_PROCESS (as logout(3) does). Returns how many.

    Used at teardown so SIGKILLed test sessions leave no stale records behind.
    Takes the same whole-file fcntl write lock glibc takes.
    """
    if not os.path.exists(path):
        return 0
    n = 0
    with open(path, "r+b") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            data = fh.read()
            for r in parse(data):
                if r.live and predicate(r):
                    off = r.index * UTMP_SIZE
                    rec = bytearray(data[off:off + UTMP_SIZE])
                    struct.pack_into("<h", rec, 0, DEAD_PROCESS)
                    rec[44:76] = b"\0" * 32  # ut_user
                    rec[76:332] = b"\0" * 256  # ut_host
                    fh.seek(off)
                    fh.write(bytes(rec))
                    n += 1
            fh.flush()
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)
    return n


def rewrite_host(pid: int, host: str, path: str = "/run/utmp") -> int:
    """Set ``ut_host`` of the live records of ``pid`` to ``host``, as that process could through libutempter
    (which writes whatever host text its caller hands it). Returns how many records changed."""
    n = 0
    with open(path, "r+b") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            for r in parse(fh.read()):
                if r.live and r.pid == pid:
                    fh.seek(r.index * UTMP_SIZE + 76)
                    fh.write(host.encode()[:255].ljust(256, b"\0"))
                    n += 1
            fh.flush()
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)
    return n

"""What a process holds: its file descriptors, its sockets (from ``/proc/PID/net``) and pty masters."""

from __future__ import annotations

import ipaddress
import os
from typing import Dict, List, Set, Tuple

from .table import PROC, read_file


def fd_targets(pid: int, proc_root: str = PROC) -> Dict[int, str]:
    out: Dict[int, str] = {}
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
    return {int(t[8:-1]) for t in fd_targets(pid, proc_root).values() if t.startswith("socket:[")}


def _parse_inet_table(text: str, v6: bool) -> Dict[int, Tuple[str, int]]:
    """inode -> (local ip, local port) from /proc/net/{udp,tcp}{,6}."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        hexip, hexport = parts[1].split(":")
        if v6:
            words = [hexip[i:i + 8] for i in range(0, 32, 8)]
            ip = str(ipaddress.IPv6Address(b"".join(bytes.fromhex(w)[::-1] for w in words)))
        else:
            ip = ".".join(str(b) for b in bytes.fromhex(hexip)[::-1])
        out[int(parts[9])] = (ip, int(hexport, 16))
    return out


def inet_sockets(pid: int, proto: str = "udp", proc_root: str = PROC) -> List[Tuple[str, int, int]]:
    """(local ip, local port, inode) of every ``proto`` ('udp' or 'tcp') socket ``pid`` holds."""
    inodes = socket_inodes(pid, proc_root)
    if not inodes:
        return []
    table: Dict[int, Tuple[str, int]] = {}
    for suffix, v6 in (("", False), ("6", True)):
        text = read_file(f"{proc_root}/{pid}/net/{proto}{suffix}")
        if text:
            table.update(_parse_inet_table(text, v6))
    return [(table[i][0], table[i][1], i) for i in sorted(inodes) if i in table]


def udp_ports(pid: int, proc_root: str = PROC) -> Set[int]:
    return {port for _ip, port, _ino in inet_sockets(pid, "udp", proc_root)}


def has_ptmx(pid: int, proc_root: str = PROC) -> bool:
    """Holds a pty master, whatever path it was opened through: the kernel writes ``tty-index`` into
    fdinfo for pty masters only."""
    for fd in fd_targets(pid, proc_root):
        info = read_file(os.path.join(proc_root, str(pid), "fdinfo", str(fd)))
        if info and "tty-index:" in info:
            return True
    return False

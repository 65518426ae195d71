"""Mounts seen from outside a host: which mounts touch the fleet's files, and a removal that never
crosses into one (a host's /etc, /home... are mounts of directories in the fleet's state dir)."""

from __future__ import annotations

import os
import shutil
from typing import List, Sequence, Union

from ..host import HarnessError
from ..procfs import PROC, read_file


def _unescape(p: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_touching(paths: Sequence[str], pid: Union[int, str] = "self") -> List[str]:
    """mountinfo lines (of ``pid``'s mount namespace) whose mount point, source root, source
    or options (e.g. an overlay's lowerdir/upperdir) name a path at or below one of ``paths``."""
    out = []
    for line in (read_file(f"{PROC}/{pid}/mountinfo") or "").splitlines():
        f = line.split()
        if len(f) < 5:
            continue
        words = [_unescape(w) for w in f[3:5]]
        if " - " in line:  # after the separator: fstype, source, super options (comma separated)
            tail = line.split(" - ", 1)[1].split()
            words += [_unescape(w) for w in tail[1:2]]
            for opt in (tail[2] if len(tail) > 2 else "").split(","):
                words += [_unescape(v) for v in opt.partition("=")[2].split(":") if v]
        if any(x == p or x.startswith(p.rstrip("/") + "/") for p in paths for x in words):
            out.append(line)
    return out


def safe_rmtree(path: str) -> None:
    """rmtree that refuses to run while anything is mounted at or below ``path`` (in this
    mount namespace) and never crosses into another file system."""
    if not os.path.lexists(path):
        return
    mounted = mounts_touching([path])
    if mounted:
        raise HarnessError(f"refusing to remove {path}: mounts below it:\n  " + "\n  ".join(mounted))
    dev = os.lstat(path).st_dev
    for top, dirs, _files in os.walk(path):
        for d in dirs:
            if os.lstat(os.path.join(top, d)).st_dev != dev:
                raise HarnessError(f"refusing to remove {path}: {os.path.join(top, d)} is another file system")
    shutil.rmtree(path)

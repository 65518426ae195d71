"""Processes that cannot run: stopped by job control or tracing, or frozen in a cgroup v2 group.

A revocation freezes what it is about to end; it must never leave anything held behind.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from .table import PROC, Proc, all_pids, read_file, read_proc, stat_fields


def stopped_procs(proc_root: str = PROC) -> List[Proc]:
    """Every process on the host in a job-control or tracing stop (state ``T`` or ``t``).

    One read of ``stat`` per process; only the stopped ones are read in full.
    """
    out = []
    for pid in all_pids(proc_root):
        st = stat_fields(pid, proc_root)
        if st is not None and st["state"] in ("T", "t"):
            p = read_proc(pid, proc_root)
            if p is not None and p.state in ("T", "t"):
                out.append(p)
    return out


def cgroup2_mount() -> Optional[str]:
    """Where this machine's cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or a hybrid's
    ``/sys/fs/cgroup/unified``), or None."""
    for line in (read_file(f"{PROC}/self/mountinfo") or "").splitlines():
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
        text = read_file(f"{PROC}/{pid}/cgroup")
        path = next((ln[3:] for ln in (text or "").splitlines() if ln.startswith("0::")), None)
        if not path or path == "/":
            continue
        if path not in frozen:
            events = read_file(os.path.join(mount, path.lstrip("/"), "cgroup.events")) or ""
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

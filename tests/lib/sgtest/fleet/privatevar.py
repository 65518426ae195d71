"""Per-host directories below /var for what the lockout keeps on a host.

A fleet host shares /var with the machine (only /var/log and /var/tmp are its own), but the lockout's state and
quarantine (/var/lib/sessionguard), the cron and at spools (/var/spool/cron) and systemd's linger flags
(/var/lib/systemd/linger) belong to one host each: without these binds every host would read and write the same
deny list. Standard library only (the binds are mounted by hostinit).
"""

from __future__ import annotations

import os
from typing import Dict, List

# target on the host -> mode of the mount point; the spool's subdirectories (crontabs, atjobs...) are copied empty.
PRIVATE = {
    "/var/lib/sessionguard": 0o700,
    "/var/spool/cron": 0o755,
    "/var/lib/systemd/linger": 0o755,
}


def private_var_binds(hostdir: str) -> List[Dict[str, object]]:
    """Create ``hostdir/var-private/*`` (empty, with the machine's layout of the spool) and the mount points on the
    machine where missing; return hostinit bind entries for them."""
    binds: List[Dict[str, object]] = []
    base = os.path.join(hostdir, "var-private")
    os.mkdir(base, 0o755)
    for target, mode in PRIVATE.items():
        source = os.path.join(base, target.strip("/").replace("/", "-"))
        os.mkdir(source)
        os.chmod(source, mode)
        os.makedirs(target, mode=mode, exist_ok=True)   # the mount point (an empty directory on the machine)
        if os.path.isdir(target):
            for entry in sorted(os.listdir(target)):
                path = os.path.join(target, entry)
                if os.path.isdir(path) and not os.path.islink(path) and target == "/var/spool/cron":
                    _copy_layout(path, os.path.join(source, entry))
        binds.append({"source": source, "target": target})
    return binds


def _copy_layout(src: str, dest: str) -> None:
    """``src`` as an empty directory with its owner and mode, plus its dot files (at's ``.SEQ`` job counter,
    which at(1) needs and does not create)."""
    st = os.stat(src)
    os.mkdir(dest)
    os.chown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, st.st_mode & 0o7777)
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if name.startswith(".") and os.path.isfile(path) and not os.path.islink(path):
            fst = os.stat(path)
            with open(path, "rb") as fh, open(os.path.join(dest, name), "wb") as out:
                out.write(fh.read())
            os.chown(os.path.join(dest, name), fst.st_uid, fst.st_gid)
            os.chmod(os.path.join(dest, name), fst.st_mode & 0o7777)


__all__ = ["PRIVATE", "private_var_binds"]

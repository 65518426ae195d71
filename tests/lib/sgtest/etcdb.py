"""The account databases of an /etc (passwd, shadow, group, gshadow), read and edited as files.

A host's files are reached through ``host.path("/etc")``; the fleet also edits its template copy of
the machine's /etc before any host runs (``useradd --prefix`` makes the accounts themselves).
"""

from __future__ import annotations

import os
from typing import List, Set, Tuple

from .host import HarnessError

DATABASES = ("passwd", "shadow", "group", "gshadow")


def write_file(path: str, text: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    """Replace ``path`` atomically (a reader sees the old or the new file, never half of one)."""
    tmp = path + ".sgtest-tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_db(path: str) -> List[List[str]]:
    """The entries of a colon-separated database, each as its list of fields."""
    with open(path) as fh:
        return [line.rstrip("\n").split(":") for line in fh if line.strip()]


def names_and_ids(etc: str) -> Tuple[Set[str], Set[int]]:
    """Every user and group name, and every UID and GID, of the databases in ``etc``."""
    names: Set[str] = set()
    ids: Set[int] = set()
    for db in ("passwd", "group"):
        for f in read_db(os.path.join(etc, db)):
            names.add(f[0])
            if len(f) > 2 and f[2].isdigit():
                ids.add(int(f[2]))
    return names, ids


def group_gid(etc: str, name: str) -> int:
    for f in read_db(os.path.join(etc, "group")):
        if f[0] == name:
            return int(f[2])
    raise HarnessError(f"group {name} missing in {etc}/group")


def free_id(etc: str, start: int) -> int:
    """The lowest ID from ``start`` on that is neither a UID nor a GID in ``etc``."""
    _names, used = names_and_ids(etc)
    i = start
    while i in used:
        i += 1
    return i


def drop_accounts(etc: str, gecos_prefix: str) -> None:
    """Remove the accounts whose GECOS starts with ``gecos_prefix``, and their groups, from every database."""
    names = {f[0] for f in read_db(os.path.join(etc, "passwd")) if len(f) > 4 and f[4].startswith(gecos_prefix)}
    if not names:
        return
    for db in DATABASES:
        path = os.path.join(etc, db)
        if not os.path.exists(path):
            continue
        st = os.stat(path)
        keep = [f for f in read_db(path) if f[0] not in names]
        write_file(path, "".join(":".join(f) + "\n" for f in keep), st.st_mode & 0o7777, st.st_uid, st.st_gid)

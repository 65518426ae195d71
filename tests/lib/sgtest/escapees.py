"""Start the processes that survive a dead mosh-server, from inside a live session.

Each escapee is typed into the session's shell (like a user would) and carries
a unique marker as one whole argv element, so it can be found in /proc:

==============  ===============================================================
kind            what the shell runs
==============  ===============================================================
``nohup``       ``nohup bash -c 'exec -a "$0" sleep N' MARK &``   (argv0 MARK)
``disown``      ``bash -c 'exec -a "$0" sleep N' MARK & disown``  (argv0 MARK)
``setsid``      ``setsid bash -c 'exec -a "$0" sleep N' MARK &``  (own session)
``doublefork``  ``( ( exec -a MARK sleep N & ) & )``   (PPID 1, shell's session)
``tmux``        ``tmux -L MARK new-session -d 'exec -a MARK-child sleep N'``
                (the user's own tmux *server*; its child is ``tmux_child``)
``trap``        ``nohup python3 -c '<ignore TERM,HUP,INT; sleep>' MARK &``
==============  ===============================================================

All inherit the login's audit loginuid/sessionid.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

from . import procfs
from .host import HarnessError
from .waiting import wait_for

ALL_KINDS = ("nohup", "disown", "setsid", "doublefork", "tmux", "trap")
SLEEP = "100000"
_TRAP_PY = "import signal,time; [signal.signal(s, signal.SIG_IGN) for s in (1, 2, 15)]; time.sleep(10**6)"


@dataclass
class Escapee:
    kind: str
    marker: str
    proc: procfs.Proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def starttime(self) -> int:
        return self.proc.starttime

    def alive(self) -> bool:
        return self.proc.alive()

    def __str__(self) -> str:
        return f"{self.kind}: {self.proc}"


def new_marker(tag: str = "sgm") -> str:
    return f"{tag}-" + "".join(random.choice(string.ascii_lowercase + string.digits) for _i in range(8))


_QUIET = "</dev/null >/dev/null 2>&1"
_COMMANDS = {
    "nohup": "nohup bash -c 'exec -a \"$0\" sleep {sleep}' {m} {quiet} &",
    "disown": "bash -c 'exec -a \"$0\" sleep {sleep}' {m} {quiet} & disown",
    "setsid": "setsid bash -c 'exec -a \"$0\" sleep {sleep}' {m} {quiet} &",
    "doublefork": "( ( exec -a {m} sleep {sleep} {quiet} & ) & )",
    "tmux": "tmux -L {m} new-session -d 'exec -a {m}-child sleep {sleep}'",
    "trap": "nohup python3 -c '{trap}' {m} {quiet} &",
}


def command_for(kind: str, marker: str) -> str:
    """The shell line that starts escapee ``kind`` carrying ``marker``."""
    if kind not in _COMMANDS:
        raise ValueError(f"unknown escapee kind {kind!r}")
    return _COMMANDS[kind].format(m=marker, sleep=SLEEP, quiet=_QUIET, trap=_TRAP_PY)


def _matcher(kind: str, marker: str):
    """(argv token, predicate) identifying the final process of ``kind``."""
    if kind in ("nohup", "disown", "setsid", "doublefork"):
        return marker, lambda p: p.argv0 == marker and p.comm == "sleep"
    if kind == "tmux":
        return marker, lambda p: p.comm.startswith("tmux") and "server" in p.comm
    if kind == "tmux_child":
        return f"{marker}-child", lambda p: p.argv0 == f"{marker}-child" and p.comm == "sleep"
    if kind == "trap":
        return marker, lambda p: p.comm.startswith("python") and p.cmdline[-1:] == (marker,)
    raise ValueError(kind)


def find_escapee(uid: int, kind: str, marker: str, proc_root: str = "/proc") -> Optional[procfs.Proc]:
    token, pred = _matcher(kind, marker)
    found = procfs.find_by_argv(token, uid=uid, proc_root=proc_root, extra=pred)
    if len(found) > 1:
        raise HarnessError(f"marker {marker} matched several processes: {[str(p) for p in found]}")
    return found[0] if found else None


def start_escapees(session, kinds: Iterable[str] = ALL_KINDS, tag: str = "sgm",
                   timeout: float = 20.0) -> Dict[str, Escapee]:
    """Type one command per kind into ``session`` (a MoshSession or SshSession) and
    return ``{kind: Escapee}`` once each process is found alive in /proc.

    ``tmux`` also yields ``tmux_child`` (the sleep the user's tmux server runs).
    """
    kinds = list(kinds)
    user = session.user
    proc_root = user.host.proc_root
    markers = {k: new_marker(f"{tag}{k[:2]}") for k in kinds}
    for kind in kinds:
        session.send_line(command_for(kind, markers[kind]))
    session.sync(timeout)
    wanted = [(k, markers[k]) for k in kinds]
    if "tmux" in kinds:
        wanted.append(("tmux_child", markers["tmux"]))
    out: Dict[str, Escapee] = {}

    def _all_found() -> bool:
        for kind, marker in wanted:
            if kind not in out:
                p = find_escapee(user.uid, kind, marker, proc_root)
                if p is not None:
                    out[kind] = Escapee(kind, marker, p)
        return len(out) == len(wanted)

    wait_for(_all_found, timeout, lambda: "escapees " + ", ".join(k for k, _m in wanted if k not in out)
             + "; screen:\n" + session.screen(history=True).rstrip())
    dead = [str(e) for e in out.values() if not e.alive()]
    if dead:
        raise HarnessError(f"escapees died right after start: {dead}")
    return out

"""The fleet: N namespaced hosts with their own sshd on 127.0.0.(N+1):22.

Life cycle (root only)::

    fleet = Fleet(state_dir)      # loads state.json if that fleet is already up
    fleet.up(4)                   # sghost01..sghost04 on 127.0.0.2..127.0.0.5
    fleet.hosts[0].run(["id"])    # as root inside sghost01
    fleet.down()                  # stops everything by PID, verifies, removes the state dir

Everything lives in the state directory (default ``/tmp/sessionguard-fleet/default``)::

    state.json            hosts: name, address, init/unshare PIDs + start times, namespaces
    owner                 "sgtest owner PID/START KIND" of the process that brought it up
    inventory.yml         Ansible inventory (inventory.py)
    ops/id_ed25519        the key Ansible logs in with (user ops, sudo NOPASSWD)
    template/etc          the machine's /etc copied at up (+ ops): lower layer of every host's /etc
    hosts/NAME/           etc-upper/ etc-work/ (the host's /etc layer), home/ root/ tmp/ var-log/
                          var-tmp/ (the host's own directories), config.json, init.log, sshd.log
    cp/                   ControlPath of Ansible's ssh masters
    scopes/               users' keys and the client side of sessions (tmux sockets, screens)
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import subprocess
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .. import etcdb
from ..ansible import adhoc, playbook
from ..harness import BaseFleet
from ..host import HarnessError, LocalHost
from ..users import owner_alive, owner_tag
from ..waiting import Stopwatch
from . import lifecycle
from .addresses import free_block
from .build import make_template, prepare_hosts
from .hosts import FleetHost
from .inventory import render_inventory
from .mounts import safe_rmtree
from .profiles import PROFILE_BY_NAME, PROFILES, Profile


class Fleet(BaseFleet):
    """A fleet of namespaced hosts described by ``state_dir`` (see the module doc).

    ``Fleet(state_dir)`` attaches to a fleet that is already up there (state.json), so
    ``down`` and ``status`` work from a fresh process. ``kind`` is recorded in the owner
    file: fleets of kind ``pytest`` whose owner process died are purged by the fixtures.
    """

    uid_range = (10000, 19999)  # the machine's own test users (Harness) take 20000-59999
    user_prefix = "sgf"

    def __init__(self, state_dir: Optional[str] = None, kind: str = "api") -> None:
        super().__init__(os.path.abspath(state_dir or os.environ.get("SG_FLEET_STATE_DIR")
                                         or lifecycle.DEFAULT_STATE_DIR))
        self.kind = kind
        self.hosts: List[FleetHost] = []  # type: ignore[assignment]
        self.unshare: Dict[str, subprocess.Popen] = {}  # host name -> our unshare process
        self.timings: Dict[str, float] = {}
        self._load()

    # ------------------------------------------------------------------ paths and state
    @property
    def state_file(self) -> str:
        return os.path.join(self.state_dir, "state.json")

    @property
    def inventory_path(self) -> str:
        return os.path.join(self.state_dir, "inventory.yml")

    @property
    def ops_key_path(self) -> str:
        return os.path.join(self.state_dir, "ops", "id_ed25519")

    def hosts_in(self, group: str) -> List[FleetHost]:
        """Hosts of an inventory group (``py39``, ``no_psutil``...)."""
        return [h for h in self.hosts if group in h.groups]

    def _load(self) -> None:
        try:
            with open(self.state_file) as fh:
                state = json.load(fh)
        except FileNotFoundError:
            return
        self.hosts = [FleetHost(self, rec) for rec in state["hosts"]]

    def save(self) -> None:
        state = {"version": 1, "state_dir": self.state_dir, "kind": self.kind, "hosts": [h.record for h in self.hosts]}
        etcdb.write_file(self.state_file, json.dumps(state, indent=1) + "\n", 0o600)

    def write_inventory(self) -> str:
        etcdb.write_file(self.inventory_path, render_inventory(self.hosts, self.ops_key_path, self.state_dir), 0o644)
        return self.inventory_path

    def owner(self) -> Tuple[Optional[str], Optional[str]]:
        """(owner tag, kind) from the owner file."""
        try:
            with open(os.path.join(self.state_dir, "owner")) as fh:
                tag, _sep, kind = fh.read().strip().rpartition(" ")
            return tag, kind
        except (OSError, ValueError):
            return None, None

    def is_up(self) -> bool:
        return bool(self.hosts) and all(h.alive() for h in self.hosts)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        os.makedirs(lifecycle.STATE_ROOT, mode=0o711, exist_ok=True)
        fd = os.open(lifecycle.LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ up
    def up(self, n: int, profiles: Optional[Sequence[Union[str, Profile]]] = None, timeout: float = 120.0,
           first: Optional[int] = 1) -> "Fleet":
        """Bring up ``n`` hosts with indexes ``first``.. (host K is ``sghostKK`` on
        127.0.0.(K+1)); ``first=None`` picks the lowest block of ``n`` free addresses (so that
        test fleets can run next to a fleet started with the CLI). ``profiles`` (names or
        :class:`Profile`) are taken in turn; default :data:`PROFILES`. A no-op if exactly this
        fleet is already up."""
        profs = [PROFILE_BY_NAME[p] if isinstance(p, str) else p for p in (profiles or PROFILES)]
        with self._lock():
            self._load()
            if self.hosts:
                if self.is_up() and len(self.hosts) == n:
                    return self
                raise HarnessError(f"a fleet with {len(self.hosts)} hosts is already recorded in "
                                   f"{self.state_dir}; bring it down first")
            if first is None:
                first = free_block(n, lifecycle.recorded_indexes())
            lifecycle.preflight(n, profs, first)
            clock = Stopwatch()
            try:
                self._up(n, profs, timeout, first, clock)
            except BaseException:
                try:
                    self._down(timeout=30.0)
                except Exception:  # pylint: disable=broad-except
                    pass
                raise
            self.timings["up"] = clock.elapsed()
        return self

    def _up(self, n: int, profs: Sequence[Profile], timeout: float, first: int, clock: Stopwatch) -> None:
        sd = self.state_dir
        if os.path.exists(sd):
            safe_rmtree(sd)  # leftovers of a fleet that is not up (state.json absent)
        os.makedirs(sd, mode=0o700)
        os.chmod(sd, 0o700)
        with open(os.path.join(sd, "owner"), "w") as fh:
            fh.write(f"{owner_tag()} {self.kind}\n")
        for d in ("ops", "hosts", "scopes", "cp"):
            os.mkdir(os.path.join(sd, d), 0o700)
        LocalHost().run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sgfleet-ops", "-f", self.ops_key_path])
        template = os.path.join(sd, "template")
        make_template(template, self.ops_key_path)
        self.timings["template"] = clock.elapsed()
        records = prepare_hosts(sd, template, range(first, first + n), profs)
        self.timings["prepare"] = clock.elapsed()
        lifecycle.start_hosts(self, records, timeout)
        self.write_inventory()
        self.timings["start"] = clock.elapsed()

    # ------------------------------------------------------------------ down
    def down(self, timeout: float = 30.0, check: bool = True) -> List[str]:
        """Stop every host and client-side process of the fleet by PID, verify that nothing
        is left (:meth:`leftovers`), remove the state dir. Returns the problems found
        (raises :class:`HarnessError` with them when ``check``); the state dir is kept then."""
        with self._lock():
            if not self.hosts:
                self._load()
            problems = self._down(timeout)
        if check and problems:
            raise HarnessError(f"fleet down left things behind (state dir kept: {self.state_dir}):\n  "
                               + "\n  ".join(problems))
        return problems

    def _down(self, timeout: float) -> List[str]:
        clock = Stopwatch()
        problems = lifecycle.stop_hosts(self, timeout) + self.leftovers()
        self.timings["down"] = clock.elapsed()
        if not problems:
            safe_rmtree(self.state_dir)
            self.hosts = []
        return problems

    def leftovers(self) -> List[str]:
        """What of this fleet still exists (see :func:`lifecycle.leftovers`)."""
        return lifecycle.leftovers(self)

    # ------------------------------------------------------------------ status and Ansible
    def status(self) -> List[Dict[str, object]]:
        """One dict per host: name, address, profile, python, init alive, sshd answers."""
        out = []
        for h in self.hosts:
            alive = h.alive()
            out.append({"name": h.name, "address": h.address, "profile": h.profile.name, "python": h.python,
                        "psutil": h.psutil, "groups": list(h.groups), "init_pid": h.init_pid, "init_alive": alive,
                        "sshd_pid": h.sshd.refresh() if alive else None,
                        "sshd_answers": alive and h.sshd_answers()})
        return out

    def ansible(self, pattern: str, module: str, args: Optional[str] = None, **kw):
        """Ad-hoc ``ansible`` run on this fleet's inventory (:func:`sgtest.ansible.adhoc`)."""
        return adhoc(self.inventory_path, pattern, module, args, **kw)

    def playbook(self, plays: Sequence[dict], **kw):
        """``ansible-playbook`` run of ``plays`` on this fleet's inventory (:func:`sgtest.ansible.playbook`)."""
        return playbook(self.inventory_path, plays, **kw)

    def __repr__(self) -> str:
        return f"<Fleet {self.state_dir} hosts={len(self.hosts)}>"


def purge_stale_fleets(kinds: Sequence[str] = ("pytest",)) -> List[str]:
    """Bring down fleets of the given kinds whose owner process is gone (crashed test runs)."""
    done = []
    for owner_file in glob.glob(os.path.join(lifecycle.STATE_ROOT, "*", "owner")):
        sd = os.path.dirname(owner_file)
        f = Fleet(sd)
        tag, kind = f.owner()
        if tag is None or kind not in kinds or owner_alive(tag):
            continue
        problems = f.down(check=False)
        done.append(f"{sd}: {'clean' if not problems else '; '.join(problems)}")
    return done


def fleet_of(n: int, prefix: str = "pt") -> Iterator[Fleet]:
    """A pytest fleet of ``n`` hosts on the lowest free addresses, for a fixture to ``yield from``: a failed ``up``
    takes down what it started; the fixture's teardown brings it down and checks nothing is left."""
    f = Fleet(lifecycle.new_state_dir(prefix), kind="pytest")
    try:
        f.up(n, first=None)
    except BaseException:
        f.down(check=False)
        raise
    yield f
    f.down()

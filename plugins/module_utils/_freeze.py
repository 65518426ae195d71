# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Holding a set of processes still while a revocation works on it, and the watchdog that lets go.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Two freezers with one interface. ``CgroupFreezer`` moves processes into cgroup v2 groups of its own that are
frozen before anything enters them (``cgroup.freeze``), so a process is frozen the moment it arrives and every
child it could still fork is born frozen in the same group. A cgroup-frozen task is not job-control stopped:
its parent gets no ``SIGCHLD``/``CLD_STOPPED`` and a ``SIGCONT`` from anyone does not wake it. (``sudo``, for
one, answers a stopped command by stopping itself and its whole process group, which may be somebody else's
shell.) ``cgroup.kill`` (Linux 5.14+) then kills a whole group atomically, forks included.
``SignalFreezer`` is the fallback where no writable cgroup v2 exists: ``SIGSTOP`` per process.

Processes go into one of two groups: ``kill`` (everything planned to die at once) and ``grace`` (mosh servers,
thawed to carry the notice and mosh's clean shutdown to their clients). Nothing that must be spared or only
reported ever enters either group, which is what makes ``cgroup.kill`` safe to use.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import PROC, read_start_ticks

GROUPS = ('kill', 'grace')
_SETTLE = 2.0


def cgroup2_mount(root=PROC):
    """Where cgroup v2 is mounted in this mount namespace (``/sys/fs/cgroup`` or a hybrid's
    ``/sys/fs/cgroup/unified``), or None."""
    try:
        with open(os.path.join(root, 'self', 'mountinfo'), 'rb') as f:
            lines = f.read(1 << 20).split(b'\n')
    except OSError:
        return None
    for line in lines:
        left, _sep, right = line.partition(b' - ')
        if right.split(b' ')[:1] == [b'cgroup2']:
            fields = left.split(b' ')
            if len(fields) > 4:
                return fields[4].decode('utf-8', 'surrogateescape').replace('\\040', ' ')
    return None


def _write(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode() if not isinstance(data, bytes) else data)
    finally:
        os.close(fd)


class SignalFreezer(object):
    """SIGSTOP/SIGCONT per process: the fallback where cgroup v2 freezing is not available."""

    name = 'sigstop'

    def __init__(self):
        self.members = dict((g, []) for g in GROUPS)

    def freeze(self, handle, group):
        self.members[group].append(handle)
        return handle.send(signal.SIGSTOP)

    def settle(self):
        pass

    def thaw(self, group):
        for h in self.members[group]:
            h.send(signal.SIGCONT)

    def kill(self, group):
        for h in self.members[group]:
            h.send(signal.SIGKILL)

    def paths(self):
        return []

    def close(self):
        """Thaw whatever is still alive: never leave a process stopped."""
        thawed = []
        for g in GROUPS:
            for h in self.members[g]:
                if h.alive() and h.send(signal.SIGCONT):
                    thawed.append(h)
        return thawed


class CgroupFreezer(object):
    """Two frozen cgroup v2 groups of this run's own under ``mount``."""

    name = 'cgroup'

    def __init__(self, mount, root=PROC):
        self.root = root
        self.base = os.path.join(mount, 'sessionguard-%d-%d' % (os.getpid(), int(time.time() * 1000)))
        self.members = dict((g, []) for g in GROUPS)
        self.has_kill = False
        os.mkdir(self.base, 0o700)
        try:
            for g in GROUPS:
                os.mkdir(self.path(g), 0o700)
                # Frozen while still empty: whatever is moved in later is frozen on arrival.
                _write(self.path(g, 'cgroup.freeze'), '1')
            self.has_kill = os.path.exists(self.path('kill', 'cgroup.kill'))
        except OSError:
            self._rmdirs()
            raise

    @classmethod
    def create(cls, root=PROC):
        """A CgroupFreezer, or None where cgroup v2 freezing cannot be used here."""
        mount = cgroup2_mount(root)
        if mount is None or not os.path.exists(os.path.join(mount, 'cgroup.procs')):
            return None
        try:
            return cls(mount, root)
        except OSError:
            return None

    def path(self, group, *parts):
        return os.path.join(self.base, group, *parts)

    def freeze(self, handle, group):
        """Move the process into ``group``; False when the kernel refused (it is then SIGSTOPped)."""
        if handle.gone:
            return False
        try:
            _write(self.path(group, 'cgroup.procs'), str(handle.pid))
        except OSError as e:
            if e.errno in (errno.ESRCH, errno.ENOENT):
                handle.gone = True
                return False
            # A group the kernel will not let go of (another delegation, a kernel thread...):
            # stop it the old way so it cannot run free, and thaw it the old way later.
            handle.stopped = handle.send(signal.SIGSTOP)
            self.members[group].append(handle)
            return False
        self.members[group].append(handle)
        return True

    def settle(self, timeout=_SETTLE):
        """Wait until the kernel reports both groups frozen (a task in an uninterruptible wait never
        freezes; it cannot run either, so the wait is bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._frozen(g) for g in GROUPS):
                return True
            time.sleep(0.01)
        return False

    def _frozen(self, group):
        try:
            with open(self.path(group, 'cgroup.events'), 'rb') as f:
                events = f.read(4096)
        except OSError:
            return True
        return b'frozen 1' in events or b'populated 0' in events

    def thaw(self, group):
        _write(self.path(group, 'cgroup.freeze'), '0')
        for h in self.members[group]:
            if getattr(h, 'stopped', False):
                h.send(signal.SIGCONT)

    def pids(self, group):
        try:
            with open(self.path(group, 'cgroup.procs'), 'rb') as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def kill(self, group):
        """Kill everything in ``group`` at once, children born inside it included."""
        if self.has_kill:
            _write(self.path(group, 'cgroup.kill'), '1')
        else:
            for pid in self.pids(group):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def paths(self):
        return [self.path(g) for g in GROUPS] + [self.base]

    def close(self):
        """Thaw both groups, move what is still alive back where it came from, remove the groups.

        Returns the handles that were alive and thawed.
        """
        thawed = []
        for g in GROUPS:
            if not self.pids(g):
                continue
            try:
                self.thaw(g)
            except OSError:
                pass
            for h in self.members[g]:
                if h.alive():
                    thawed.append(h)
                    origin = h.proc.cgroup if h.proc.cgroup and h.proc.cgroup.startswith('/') else None
                    if origin:
                        try:
                            _write(os.path.join(os.path.dirname(self.base), origin.lstrip('/'), 'cgroup.procs'),
                                   str(h.pid))
                        except OSError:
                            pass
        self._rmdirs(wait=_SETTLE)
        return thawed

    def _rmdirs(self, wait=0.0):
        """Remove the groups; killed members may take a moment to leave (EBUSY), so retry for ``wait`` seconds."""
        deadline = time.monotonic() + wait
        for p in self.paths():
            while True:
                try:
                    os.rmdir(p)
                except OSError as e:
                    if e.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                break


def make_freezer(root=PROC, prefer_cgroup=True):
    freezer = CgroupFreezer.create(root) if prefer_cgroup else None
    return freezer or SignalFreezer()


class Watchdog(object):
    """A small process outside the module's process group that finishes the job if the module dies.

    An ``async`` timeout kills the module's process group with SIGKILL, which no handler sees. The watchdog
    holds the read end of a pipe; it is told the frozen groups and PIDs as they are frozen. If the pipe closes
    without ``done``, the module died mid-run: everything it froze was planned to die, so the watchdog kills
    it (cgroup.kill, or SIGKILL after a start-time check) and removes the groups. Nothing stays frozen.
    """

    def __init__(self, root=PROC):
        self.root = root
        self.fd = None
        self.pid = None
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the watchdog child
            try:
                os.close(w)
                os.setsid()
                # Never hold the module's stdout/stderr: Ansible waits for them to close.
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                # A second fork, so the module's reaping never waits for the watchdog.
                if os.fork() == 0:
                    _watch(r, root)
            finally:
                os._exit(0)
        os.close(r)
        os.waitpid(pid, 0)
        self.fd = w

    def tell(self, line):
        if self.fd is not None:
            try:
                os.write(self.fd, (line + '\n').encode())
            except OSError:
                pass

    def groups(self, paths):
        for p in paths:
            self.tell('cg %s' % p)

    def process(self, handle):
        self.tell('pid %d %d' % (handle.pid, handle.proc.start_ticks))

    def done(self):
        self.tell('done')
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _watch(fd, root):  # pragma: no cover - runs in the watchdog child
    data = b''
    while True:
        try:
            select.select([fd], [], [])
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    lines = data.decode('utf-8', 'replace').split('\n')
    if 'done' in lines:
        return
    groups = [ln[3:] for ln in lines if ln.startswith('cg ')]
    for g in groups:
        try:
            _write(os.path.join(g, 'cgroup.kill'), '1')
        except OSError:
            pass
    for ln in lines:
        if ln.startswith('pid '):
            try:
                _pid, start = (int(x) for x in ln.split()[1:3])
                if read_start_ticks(_pid, root) == start:
                    os.kill(_pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
    time.sleep(0.5)
    for g in groups:
        try:
            _write(os.path.join(g, 'cgroup.freeze'), '0')
        except OSError:
            pass
        try:
            os.rmdir(g)
        except OSError:
            pass

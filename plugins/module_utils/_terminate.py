# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The termination engine: freeze, graceful signal, escalate, verify.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Processes are addressed by pidfd where the kernel has it (Linux 5.3+), so a PID reused after the
snapshot is never signalled; without pidfd the start time is checked right before each signal.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import read_start_ticks, read_state

SIGNAL_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGKILL: 'SIGKILL', signal.SIGHUP: 'SIGHUP'}
_POLL = 0.05


def _pidfd_supported():
    if not hasattr(os, 'pidfd_open') or not hasattr(signal, 'pidfd_send_signal'):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


HAS_PIDFD = _pidfd_supported()


class Handle(object):
    """A process addressed so that a reused PID is never hit."""

    __slots__ = ('proc', 'fd', 'signals', 'gone', 'error')

    def __init__(self, proc):
        self.proc = proc
        self.fd = None
        self.signals = []
        self.error = None
        self.gone = False
        if HAS_PIDFD:
            try:
                self.fd = os.pidfd_open(proc.pid)
            except OSError as e:
                if e.errno == errno.ESRCH:
                    self.gone = True
                    return
                # Out of descriptors or similar: start-time checks still keep reused PIDs safe.
                self.fd = None
        # Checked after the pidfd exists: if the start time still matches, the fd holds our process.
        if read_start_ticks(proc.pid) != proc.start_ticks:
            self.gone = True
            self.close()

    @property
    def pid(self):
        return self.proc.pid

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def alive(self):
        if self.gone:
            return False
        if self.fd is not None:
            readable, _w, _x = select.select([self.fd], [], [], 0)
            if readable:
                self.gone = True
                return False
            return True
        if read_start_ticks(self.pid) != self.proc.start_ticks or read_state(self.pid) in ('Z', 'X', None):
            self.gone = True
            return False
        return True

    def send(self, sig):
        """Signal the process; False when it was already gone."""
        if not self.alive():
            return False
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)
        except OSError as e:
            if e.errno == errno.ESRCH:
                self.gone = True
                return False
            self.error = '%s: %s' % (SIGNAL_NAMES.get(sig, sig), e.strerror)
            return False
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            self.signals.append(sig)
        return True

    @property
    def ended_by(self):
        """The last terminating signal sent before the process was seen gone."""
        return SIGNAL_NAMES.get(self.signals[-1]) if self.signals else 'exited'


def wait_gone(handles, timeout):
    """Wait until every handle's process has exited, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        live = [h for h in handles if h.alive()]
        if not live:
            return []
        left = deadline - time.monotonic()
        if left <= 0:
            return live
        fds = [h.fd for h in live if h.fd is not None]
        if fds and len(fds) == len(live):
            select.select(fds, [], [], min(left, 0.5))
        else:
            time.sleep(min(left, _POLL))


def kill_all_of_uid(uid):
    """SIGKILL every process of ``uid`` atomically against fork: kill(-1) run with that UID.

    Only safe when nothing that must survive runs as ``uid``; the caller checks that.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        except OSError as e:
            code = 1 if e.errno != errno.ESRCH else 0
        os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _raise_fd_limit():
    """One pidfd per process of the set: a user with thousands of processes needs more than 1024."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
    except (ValueError, OSError):
        pass


class Engine(object):
    """Runs one termination: snapshot-driven, race-aware, verified.

    ``select`` is a callable returning the list of Procs to end from a fresh snapshot; ``first`` is
    the plan already computed from the first snapshot; ``graceful`` the PIDs that get SIGTERM first
    (mosh servers, so their clients get mosh's clean shutdown).
    """

    def __init__(self, grace_period, rescan, max_rounds=20):
        _raise_fd_limit()
        self.grace = grace_period
        self.rescan = rescan
        self.max_rounds = max_rounds
        self.handles = {}   # (pid, start) -> Handle
        self.survivors = []
        self.errors = []

    def _adopt(self, procs):
        new = []
        for p in procs:
            key = p.identity()
            if key not in self.handles:
                h = Handle(p)
                self.handles[key] = h
                new.append(h)
        return new

    def _freeze(self, handles):
        for h in handles:
            h.send(signal.SIGSTOP)

    def run(self, procs, sweep=None):
        """SIGSTOP all, SIGTERM all, SIGCONT, wait ``grace``, SIGKILL the rest, rescan until clean.

        ``sweep`` runs once after the kill and before verification (the scope-all kill(-1)).
        """
        first = self._adopt(procs)
        self._freeze(first)
        # While frozen nothing of the set forks or reparents; catch what appeared before the freeze.
        for _i in range(self.max_rounds):
            extra = self._adopt(self.rescan())
            if not extra:
                break
            self._freeze(extra)
        live = [h for h in self.handles.values() if not h.gone]
        for h in live:
            h.send(signal.SIGTERM)
        for h in live:
            h.send(signal.SIGCONT)
        remaining = wait_gone(live, self.grace)
        self._kill(remaining)
        if sweep is not None:
            sweep()
        for _i in range(self.max_rounds):
            late = self._adopt(self.rescan())
            stubborn = [h for h in self.handles.values() if h.alive()]
            if not late and not stubborn:
                break
            self._kill(late + [h for h in stubborn if h not in late])
            time.sleep(_POLL)
        self.survivors = [h for h in self.handles.values() if h.alive()]
        for h in self.handles.values():
            if h.error:
                self.errors.append('pid %d: %s' % (h.pid, h.error))
            h.close()
        return list(self.handles.values())

    def _kill(self, handles):
        self._freeze(handles)
        for h in handles:
            h.send(signal.SIGKILL)
        wait_gone(handles, 2.0)

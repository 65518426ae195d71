# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The termination engine: freeze, notify, kill, verify - and finish the job whatever goes wrong.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Processes are addressed by pidfd where the kernel has it (Linux 5.3+), so a PID reused after the snapshot is
never signalled. Where a pidfd cannot be opened (no kernel support, or the descriptor limit is reached) the
start time is checked right before each signal instead; a process that cannot be read is never taken for gone.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._freeze import Watchdog, make_freezer
from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import PROC, last_pid, read_start_ticks, read_state

SIGNAL_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGKILL: 'SIGKILL', signal.SIGHUP: 'SIGHUP'}
_POLL = 0.02
# Descriptors kept free for reading /proc, the cgroup files and Ansible itself when pidfds are many.
_FD_RESERVE = 128
# How long later scans keep chasing processes that appeared after the snapshot (a fork-hopper gets a new
# PID every few hundred microseconds; each round is a fresh chance to catch the current one).
CHASE_SECONDS = 10.0
# Signals that end the module: caught so the job is finished (kill what was planned, thaw the rest).
_FATAL = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
# How many of the most recently allocated PIDs each round of the fork-hopper catcher probes.
_NEWEST = 8


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


def _fd_budget():
    """How many pidfds this run may hold; the rest of the set is addressed by start time."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(0, soft - _FD_RESERVE)


def _raise_fd_limit():
    """One pidfd per process of the set: a user with thousands of processes needs more than 1024."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
    except (ValueError, OSError):
        pass


class Handle(object):
    """A process addressed so that a reused PID is never hit."""

    __slots__ = ('proc', 'fd', 'signals', 'gone', 'error', 'root', 'stopped', 'group')

    def __init__(self, proc, root=PROC, pidfd=True):
        self.proc = proc
        self.root = root
        self.fd = None
        self.signals = []
        self.error = None
        self.gone = False
        self.stopped = False
        self.group = None
        if HAS_PIDFD and pidfd and root == PROC:
            try:
                self.fd = os.pidfd_open(proc.pid)
            except OSError as e:
                if e.errno == errno.ESRCH:
                    self.gone = True
                    return
                # Out of descriptors or similar: start-time checks still keep reused PIDs safe.
                self.fd = None
        # Checked after the pidfd exists: if the start time still matches, the fd holds our process.
        start = self._start()
        if start is not False and start != proc.start_ticks:
            self.gone = True
            self.close()

    def _start(self):
        """Start ticks now; None when gone; False when /proc could not tell (never "gone")."""
        try:
            return read_start_ticks(self.proc.pid, self.root)
        except OSError:
            return False

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
            p = select.poll()
            p.register(self.fd, select.POLLIN)
            if p.poll(0):
                self.gone = True
                return False
            return True
        start = self._start()
        if start is False:
            return True
        if start != self.proc.start_ticks:
            self.gone = True
            return False
        try:
            zombie = read_state(self.pid, self.root) in ('Z', 'X', None)
        except OSError:
            return True
        if zombie:
            self.gone = True
        return not zombie

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
    """Wait until every handle's process has exited, at most ``timeout`` seconds. Returns those still alive.

    pidfds are watched with poll(2), which has no descriptor-number ceiling (select(2) fails past 1024).
    """
    deadline = time.monotonic() + timeout
    live = [h for h in handles if h.alive()]
    while live:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        with_fd = [h for h in live if h.fd is not None]
        if with_fd and len(with_fd) == len(live):
            p = select.poll()
            for h in with_fd:
                p.register(h.fd, select.POLLIN)
            p.poll(int(min(left, 0.5) * 1000) + 1)
        else:
            time.sleep(min(left, _POLL))
        live = [h for h in live if h.alive()]
    return live


def watch_newest(probe, root, quiet, limit, known=()):
    """Yield each process ``probe(pid)`` returns among the newest PIDs (and not in ``known``, looked up by
    identity at each step) until none has shown for ``quiet`` seconds, ``limit`` seconds at most.

    A process that forks and exits in a loop lives well under a millisecond per PID, so a full scan never sees
    it alive; its current incarnation is almost always among the last PIDs the kernel handed out.
    """
    end = time.monotonic() + limit
    calm = time.monotonic() + quiet
    while time.monotonic() < min(end, calm):
        last = last_pid(root)
        if last is None:
            return
        for pid in range(last, max(last - _NEWEST, 1), -1):
            p = probe(pid)
            if p is not None and p.identity() not in known:
                calm = time.monotonic() + quiet
                yield p
                break


def kill_all_of_uid(uid):
    """SIGKILL every process of ``uid`` atomically against fork: kill(-1) run with that UID.

    Only safe when nothing that must survive runs as ``uid``; the caller checks that. (Its result cannot tell
    whether anything was signalled: kill(-1) succeeds whenever any other process exists.)
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


class Interrupted(Exception):
    """The module itself was sent a terminating signal mid-run."""


def _interrupt(signum, _frame):
    raise Interrupted('the module received signal %d' % signum)


class Engine(object):
    """Runs one termination: snapshot-driven, frozen while it works, verified by a fresh scan.

    Stages: freeze, catch-up, notice, grace, kill, sweep, chase, verify (``run`` gives their order). Parameters:

    ``grace_period``  seconds the mosh servers get between SIGTERM and SIGKILL, so their clients hear mosh's
                      clean shutdown; everything else of the set is killed while frozen.
    ``rescan()``      the Procs tied to the revocation in a fresh snapshot (kill and chase rounds).
    ``catch_up()``    the Procs tied to the revocation that appeared since the snapshot, for the catch-up between
                      the freeze and the notice (``rescan`` if not given).
    ``verify()``      the tied Procs still alive in a last full scan: the verdict (``rescan`` if not given).
    ``probe(pid)``    the Proc at ``pid`` when it is tied to the revocation, else None: checks the newest PIDs
                      for a fork-hopper between scans (None: no probing).
    ``root``          the procfs mount to work on.
    ``prefer_cgroup`` freeze with a cgroup v2 freezer where one can be made, else with SIGSTOP.
    ``chase``         seconds to keep rescanning after the kill for stragglers.
    ``watchdog``      start the watchdog that kills (never thaws) the set if this process dies mid-run.
    ``inspect(procs)`` called once with the Procs of the set while all of it is frozen, before any signal (the
                      forensic snapshot); it must bound its own time and must not raise.
    """

    def __init__(self, grace_period, rescan, verify=None, root=PROC, prefer_cgroup=True, chase=CHASE_SECONDS,
                 watchdog=True, probe=None, inspect=None, catch_up=None):
        _raise_fd_limit()
        self.catch_up = catch_up or rescan
        self.inspect = inspect
        self.grace = grace_period
        self.rescan = rescan
        self.probe = probe  # pid -> Proc when that PID is tied to the revocation, else None
        self.verify = verify or rescan
        self.root = root
        self.chase = chase
        self.prefer_cgroup = prefer_cgroup
        self.use_watchdog = watchdog
        self.handles = {}   # (pid, start) -> Handle
        self.survivors = []
        self.errors = []
        self.aborted = None
        self.stage = None
        self.freezer = None
        self.watchdog = None
        self._budget = _fd_budget()
        self._graceful = set()

    # --- bookkeeping ------------------------------------------------------------------------
    def _adopt(self, procs, graceful=()):
        """Handles for the processes not seen before, frozen at once. Returns the new live handles."""
        new = []
        for p in procs:
            key = p.identity()
            if key in self.handles:
                continue
            h = Handle(p, self.root, pidfd=self._budget > 0)
            if h.fd is not None:
                self._budget -= 1
            self.handles[key] = h
            if h.gone:
                continue
            h.group = 'grace' if key in graceful else 'kill'
            if self.watchdog is not None:
                self.watchdog.process(h)
            self.freezer.freeze(h, h.group)
            new.append(h)
        return new

    def _catch_newest(self, quiet=0.1, limit=2.0):
        """Catch fork-hoppers (see ``watch_newest``): probe the newest PIDs until no new tied process has shown
        for ``quiet`` seconds (at most ``limit``). Returns (handles adopted, Procs of the new tied processes seen):
        adopted means frozen on arrival, and once one incarnation is in a frozen group every child it forks is born
        there.
        """
        caught, seen = [], []
        if self.probe is None:
            return caught, seen
        for p in watch_newest(self.probe, self.root, quiet, limit, known=self.handles):
            seen.append(p)
            caught += self._adopt([p])
        return caught, seen

    def _live(self, group=None):
        return [h for h in self.handles.values() if not h.gone and (group is None or h.group == group)]

    def _kill_group(self, group):
        """Kill each member by handle (which records the signal), then the whole group at once: cgroup.kill
        also takes whatever was born inside the group."""
        for h in self._live(group):
            h.send(signal.SIGKILL)
        try:
            self.freezer.kill(group)
        except OSError as e:
            self.errors.append('killing the %s group: %s' % (group, e.strerror))

    # --- the run -------------------------------------------------------------------------------
    def run(self, procs, graceful=(), notify=None, sweep=None, term_all=False, sweep_reaches_all=False):
        """Freeze ``procs``, notify, kill, chase what appears later, verify. Returns every handle.

        ``notify()`` runs while everything is frozen except the graceful processes (thawed so they can carry
        the message); ``sweep()`` once after the kill (the scope-all kill(-1)). With ``term_all`` every process
        gets SIGTERM and ``grace`` seconds, not only the graceful ones.

        ``sweep_reaches_all``: ``sweep()`` signals every process of the set and whatever they fork, atomically
        against fork. Then there is no chase: whatever tied the verdict's scan still finds is ended (with another
        sweep) and scanned for again, a few rounds at most. The verdict still watches the newest PIDs: a
        fork-hopper is in no scan, so the set cannot tell whether one that the sweep cannot reach is about.

        When nothing happens between the freeze and the kill (no graceful process, no notice, no inspection),
        nothing can take advantage of a process left unfrozen, and the catch-up scan before the kill is skipped:
        whatever forked since the snapshot is left to the chase and the verdict.
        """
        graceful = set(graceful)
        quick = sweep is not None and sweep_reaches_all
        old = dict((s, signal.getsignal(s)) for s in _FATAL)
        for s in _FATAL:
            signal.signal(s, _interrupt)
        try:
            self.stage = 'freeze'
            self.freezer = make_freezer(self.root, self.prefer_cgroup)
            if self.use_watchdog:
                self.watchdog = Watchdog(self.root)
                self.watchdog.groups(self.freezer.paths())
            if term_all:
                graceful = set(p.identity() for p in procs)
            self._adopt(procs, graceful)
            # Catch what forked between the snapshot and the freeze; each new process is frozen on sight.
            self.stage = 'catch-up'
            deadline = time.monotonic() + self.chase
            if not graceful and notify is None and self.inspect is None:
                deadline = 0
            while time.monotonic() < deadline and (self._adopt(self.catch_up(), graceful)
                                                   or self._catch_newest()[1]):
                pass
            self.freezer.settle()
            if self.inspect is not None:
                self.stage = 'evidence'
                self.inspect([h.proc for h in self._live()])

            self.stage = 'notice'
            self.freezer.thaw('grace')
            if notify is not None:
                notify()

            # The servers go first, while the rest stays frozen: a mosh-server whose shell dies first starts its
            # shutdown on the pty hangup, and a SIGTERM arriving during that shutdown makes it quit at once,
            # without telling its client. Frozen, the rest cannot run meanwhile; it dies right after.
            self.stage = 'grace'
            for h in self._live('grace'):
                h.send(signal.SIGTERM)
            wait_gone(self._live('grace'), self.grace)
            self._kill_group('grace')
            self.stage = 'kill'
            self._kill_group('kill')
            wait_gone(self._live(), 2.0)
            if sweep is not None:
                self.stage = 'sweep'
                sweep()

            # Anything tied that appeared after the freeze (a fork-hopper) is frozen on sight and killed.
            self.stage = 'chase'
            # After a sweep that reaches the whole set, the verdict's own scan does the chase's work (below).
            deadline = time.monotonic() + (self.chase if not quick else 0)
            while time.monotonic() < deadline:
                late = self._adopt(self.rescan())
                caught, seen = self._catch_newest()
                late += caught
                stubborn = [h for h in self._live() if h.alive()]
                if not late and not stubborn and not seen:
                    break
                self._kill_group('kill')
                self._kill_group('grace')
                wait_gone(stubborn + late, 0.2)

            self.stage = 'verify'
            caught, seen = self._catch_newest(quiet=0.3)
            if caught:
                self._kill_group('kill')
                wait_gone(caught, 1.0)
            alive = dict((p.identity(), p) for p in self.verify())
            for rnd in range(3 if quick else 0):
                stubborn = [h for h in self._live() if h.alive()]
                if not alive and not stubborn:
                    break
                # Something tied showed up after the sweep, or is still on its way out: end it as the chase
                # would, sweep again, then let a fresh scan judge (a few rounds at most: the verdict must come).
                late = self._adopt(alive.values())
                self._kill_group('kill')
                self._kill_group('grace')
                sweep()
                wait_gone(late + stubborn, 0.2 * (rnd + 1))
                alive = dict((p.identity(), p) for p in self.verify())
            if seen and not caught:
                # A tied process still forks: the last incarnation seen stands for its line.
                alive[seen[-1].identity()] = seen[-1]
            for h in self.handles.values():
                if h.alive():
                    alive[h.proc.identity()] = h.proc
            self.survivors = [self.handles.get(k) or Handle(p, self.root, pidfd=False) for k, p in sorted(alive.items())]
        except BaseException as e:  # noqa: B902 - finishing the job is the point, whatever the error
            self._abort(e)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self._close()
        return list(self.handles.values())

    def _abort(self, error):
        """Finish the job after a failure: kill what was planned to die, thaw whatever else is stopped."""
        stage = self.stage
        for s in _FATAL:  # a second signal must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        if self.freezer is not None:
            for g in ('kill', 'grace'):
                try:
                    self._kill_group(g)
                except Exception as e:  # noqa: B902 - keep going; report it
                    self.errors.append('abort: killing the %s group: %s' % (g, e))
            try:
                wait_gone(self._live(), 2.0)
            except Exception as e:  # noqa: B902 - the report below must still be made
                self.errors.append('abort: waiting for the killed processes: %s' % e)
        killed = [h for h in self.handles.values() if h.signals and h.signals[-1] == signal.SIGKILL and not h.alive()]
        self.aborted = {'stage': stage, 'error': '%s: %s' % (type(error).__name__, error),
                        'killed': sorted(h.pid for h in killed), 'thawed': []}
        self.survivors = [h for h in self.handles.values() if h.alive()]

    def _close(self):
        thawed = []
        if self.freezer is not None:
            try:
                thawed = self.freezer.close()
            except Exception as e:  # noqa: B902 - keep going; report it
                self.errors.append('releasing the frozen groups: %s' % e)
        if self.aborted is not None:
            self.aborted['thawed'] = sorted(h.pid for h in thawed)
        elif thawed:
            self.errors.append('thawed %d process(es) that did not end: %s'
                               % (len(thawed), ', '.join(str(h.pid) for h in thawed)))
        if self.watchdog is not None:
            self.watchdog.done()
        for h in self.handles.values():
            if h.error:
                self.errors.append('pid %d: %s' % (h.pid, h.error))
            h.close()

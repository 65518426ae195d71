# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Ending a user's sessions on one host: plan, notify, terminate, verify, report.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import annotations

import os
import re
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._evidence import not_taken, session_view, syslog_sessions
from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import (
    PROC, ProcfsReader, Snapshot, make_reader, own_chain, pid_path)
from ansible_collections.sessionguard.mosh.plugins.module_utils._report import (
    Clock, bounded, client_address, nameless_uids, proc_entry, session_entries, session_entry)
from ansible_collections.sessionguard.mosh.plugins.module_utils._sessions import Discovery, ExeJudge, Session, is_sshd_connection
from ansible_collections.sessionguard.mosh.plugins.module_utils._terminate import Engine, HAS_PIDFD, kill_all_of_uid, watch_newest
from ansible_collections.sessionguard.mosh.plugins.module_utils._utmp import MoshUtmp

SCOPES = ('mosh', 'interactive', 'all')
KINDS = {'mosh': ('mosh',), 'interactive': ('mosh', 'ssh'), 'all': ('mosh', 'ssh')}
# Time for mosh-server to carry a notice written to the pty to its client, while the rest is frozen.
MESSAGE_DELAY = 1.0
_CONTROL = re.compile(r'[\x00-\x08\x0b-\x1f\x7f-\x9f]')


class Plan(object):
    """What a revocation would end, computed from one snapshot."""

    def __init__(self, snap, uids, scope, kill_other_uids, exclude, judge):
        self.snap, self.uids, self.scope = snap, set(uids), scope
        self.kill_other_uids = kill_other_uids
        self.exclude = set(exclude)
        disc = Discovery(snap, uids=self.uids, judge=judge)
        self.sessions = disc.sessions(KINDS[scope])
        if scope == 'all':
            for uid in sorted(self.uids):
                other = disc.other_session(uid)
                if other.members:
                    self.sessions.append(other)
        self.sessions.extend(self._started_by_users(disc))
        if scope != 'all':
            disc.set_aside_foreign(self.uids)
        self.foreign = list(disc.foreign)
        self._foreign_ids = set(p.identity() for p in self.foreign)
        self._disc = disc
        self.spared, self.reported = [], []
        self._kill, self._report = {}, {}   # id(session) -> the members it ends / only reports
        self.labels = {'sids': set(), 'audit': set(), 'logind': set()}
        self._member_of = {}
        self._label_of = {'audit': {}, 'sids': {}}
        for s in self.sessions:
            kill, report = self._kill.setdefault(id(s), []), self._report.setdefault(id(s), [])
            for p in s.members:
                self._member_of.setdefault(p.pid, s)
                if p.zombie:
                    continue    # already dead: nothing to end, and a signal would count it as ended
                if p.pid in self.exclude:
                    self.spared.append(p)
                elif self._endable(s, p):
                    kill.append(p)
                else:
                    report.append(p)
            self.reported.extend(report)
            for k, v in s.labels().items():
                self.labels[k] |= v
                for value in v if k in self._label_of else ():
                    self._label_of[k].setdefault(value, s)

    def _started_by_users(self, disc):
        """Processes of other UIDs whose loginuid is a revoked user's (``sudo -u svc job`` from any of their
        logins), not already in a session: reported in every scope, ended only with kill_other_uids.

        Per-connection sshd processes are logins, which the scope decides about, and are left out.
        """
        by_uid = {}
        for uid in sorted(self.uids):
            for p in self.snap.by('loginuid', uid):
                if (p.pid not in disc.claimed and not p.has_uid(uid) and not p.zombie and not p.kernel_thread
                        and p.pid != 1 and not is_sshd_connection(p)):
                    by_uid.setdefault(uid, []).append(p)
        out = []
        for uid, procs in sorted(by_uid.items()):
            s = Session('loginuid', uid, None, self.snap)
            s.members = sorted(procs, key=lambda p: p.pid)
            out.append(s)
        return out

    def _endable(self, s, p):
        if p.has_uid(s.uid):
            return True
        # The per-connection sshd of the user's own login is that login, whoever owns the process.
        if s.kind == 'ssh' and p is s.leader:
            return True
        # Another user's process ends only when asked, and only when the user's login started it: it carries the
        # login's audit session, or the user's loginuid. Being a child or a session-mate of such a process is not
        # enough (a root shell's children may be anyone's).
        return self.kill_other_uids and self._started_by_user(s, p)

    def _started_by_user(self, s, p):
        return (s.audit_session is not None and p.audit_session == s.audit_session) or p.loginuid in self.uids

    def kill_of(self, s):
        """The members of session ``s`` this revocation ends."""
        return self._kill.get(id(s), [])

    @property
    def procs(self):
        return [p for s in self.sessions for p in self.kill_of(s)]

    def graceful(self):
        """Identities of the mosh servers to end: they get SIGTERM so their clients hear mosh's shutdown."""
        return set(s.leader.identity() for s in self.sessions
                   if s.kind == 'mosh' and s.leader is not None and s.leader in self.kill_of(s))

    def session_of(self, proc):
        s = self._member_of.get(proc.pid)
        if s is not None:
            return s
        return self._label_of['audit'].get(proc.audit_session) or self._label_of['sids'].get(proc.sid)

    def tied(self, p):
        """Whether a process seen in a later scan belongs to what this plan ends."""
        if p.pid in self.exclude or p.pid == 1 or p.kernel_thread or p.zombie:
            return False
        if p.may_run_as(self.uids):
            if p.identity() in self._foreign_ids or self._disc.is_foreign(p):
                return False
            if self.scope == 'all':
                return True
            return (p.audit_session in self.labels['audit'] or p.sid in self.labels['sids']
                    or bool(p.logind_session and p.cgroup in self.labels['logind']))
        # Another user's process: only what the user's login started, only when asked (as in _endable).
        if not self.kill_other_uids or is_sshd_connection(p):
            return False
        return p.audit_session in self.labels['audit'] or p.loginuid in self.uids


def sanitize_message(text):
    """Terminal-safe text: no escape sequences from a variable, lines ended with CR LF."""
    lines = [_CONTROL.sub('', line) for line in text.replace('\r\n', '\n').split('\n')]
    return ('\r\n' + '\r\n'.join(lines) + '\r\n').encode('utf-8', 'replace')


class Notice(object):
    """Writes a notice to session terminals, as ``write(1)`` would, and keeps them open until released.

    Holding the terminal open means the shell's death cannot hang up the pty under the mosh-server before it
    has carried the notice to its client (a pty whose last slave closes reads EIO on the master).
    """

    def __init__(self, text):
        self.data = sanitize_message(text)
        self.reached = []
        self._fds = []

    def send(self, sessions, root=PROC):
        # Opened through the mount namespace of a process that holds the terminal: the same pts number in a
        # container's devpts is somebody else's terminal.
        targets = dict(((s.tty, s.tty_pid), s) for s in sessions if s.tty and s.tty_pid)
        for tty, pid in sorted(targets):
            try:
                fd = os.open(pid_path(pid, 'root', 'dev', tty, root=root), os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError:
                continue
            self._fds.append(fd)
            try:
                os.write(fd, self.data)
                self.reached.append(tty)
            except OSError:
                pass
        if self.reached:
            time.sleep(MESSAGE_DELAY)
        return self.reached

    def release(self):
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def revoke(targets, scope='mosh', grace_period=5.0, notice=None, check_mode=False,
           kill_other_uids=False, prefer_psutil=True, term_all=False, root=PROC, engine_options=None,
           evidence=None, run_id=None, reason=None, syslog=False):
    """End the sessions of ``targets`` (resolved users). Returns the module result (without ``changed``).

    ``evidence``: an _evidence.Evidence to fill while the set is frozen (None: no snapshot). ``syslog``: one syslog
    line per ended session, with ``run_id`` and ``reason``.
    """
    reader = make_reader(prefer_psutil, root)
    judge = ExeJudge(root)
    exclude = own_chain(root)
    uids = [t.uid for t in targets]
    clock = Clock(root)
    snap = Snapshot(reader, uids=uids)
    plan = Plan(snap, uids, scope, kill_other_uids, exclude, judge)
    # utmp and wtmp hold only mosh-servers' client addresses: not read (wtmp's tail is megabytes) without one.
    utmp = MoshUtmp() if any(s.kind == 'mosh' for s in plan.sessions) else None
    # Read while the sessions still exist: a dead leader's sockets are gone.
    addresses = dict((id(s), client_address(s, snap, utmp)) for s in plan.sessions if s.leader is not None)
    result = {
        'scope': scope,
        'process_reader': reader.name,
        'pidfd': HAS_PIDFD,
        'absent_users': [],
        'spared': bounded([proc_entry(p, reason='runs this task (the Ansible connection or its ancestors)')
                           for p in plan.spared]),
        'other_uid_processes': bounded([proc_entry(p) for p in plan.reported]),
        'foreign_processes': bounded([proc_entry(p, pid_namespace=snap.pid_ns(p.pid), cgroup=p.cgroup)
                                      for p in plan.foreign]),
        'unreadable': judge.flagged(),
        'survivors': [],
        'notice_sent_to': [],
        'run_id': run_id,
        'evidence': not_taken(run_id, 'evidence is off' if evidence is None else None),
        'syslog_lines': 0,
    }
    result['nameless_uids'] = nameless_uids(snap)
    swept = _sweep_uids(plan)
    mine = [p for p in snap if p.may_run_as(plan.uids)]
    seen = set(p.uid for p in mine if p.uid in plan.uids) | set(p.euid for p in mine if p.euid in plan.uids)
    seen |= set(s.uid for s in plan.sessions)
    for t in targets:
        if t.name is None and t.uid not in seen:
            result['absent_users'].append(t.spec)

    probe_reader = ProcfsReader(root)

    def probe(pid):
        # One PID read straight from /proc, cheaply first (what ``tied`` asks is read on demand): for the
        # fork-hopper catcher.
        if pid in exclude:
            return None
        p = probe_reader.read_light(pid)
        return p if p is not None and plan.tied(p) else None

    procs = plan.procs
    if not procs and swept:
        # Scope all, and no scan saw a process of the users. A fork-hopper shows in no scan, so a user who left only
        # that behind would look absent: watch the newest PIDs for a moment before calling it nothing to do.
        procs = list(watch_newest(probe, root, quiet=0.1, limit=0.5))
    if check_mode or not procs:
        if evidence is not None:
            result['evidence']['reason'] = 'check mode: nothing was frozen' if check_mode else 'nothing to end'
        entries = [session_entry(s, plan.kill_of(s), clock, addresses.get(id(s), (None, None)))
                   for s in plan.sessions if plan.kill_of(s)]
        if procs and not plan.procs:
            entries.append(session_entry(None, procs, clock))
        result.update(session_entries(entries))
        return result

    last = [snap]

    def rescan():
        # Known processes keep what was read of them; new PIDs get the cheap first pass, candidates a full read.
        fresh = Snapshot(reader, previous=last[0], uids=uids)
        last[0] = fresh
        return _tied_in(fresh, plan, uids, scope, kill_other_uids, exclude, judge)

    def catch_up():
        # What forked between the snapshot and the freeze has a PID the snapshot did not list (a listed PID is the
        # same process, frozen by identity, or gone), and is tied by what it inherited: its UID, audit session,
        # session id. Only those PIDs are read. A new login has none of these but its UID: scope all ties it by
        # that; in the other scopes the chase's full rescans find its session.
        known = last[0].procs
        fresh = Snapshot(reader, pids=[pid for pid in reader.list_pids() if pid not in known], uids=uids)
        return [p for p in fresh.procs.values() if plan.tied(p)]

    def verify():
        return _tied_in(Snapshot(reader, uids=uids), plan, uids, scope, kill_other_uids, exclude, judge)

    inspect = None
    if evidence is not None:
        evidence.sessions = [session_view(s, plan.kill_of(s), addresses.get(id(s), (None, None)))
                             for s in plan.sessions if plan.kill_of(s)]
        # A directory that cannot take the file is known before the freeze: nothing is collected for nothing.
        if evidence.prepare():
            inspect = evidence.collect
    message = Notice(notice) if notice else None
    engine = Engine(grace_period, rescan, verify=verify, root=root, probe=probe, inspect=inspect, catch_up=catch_up,
                    **(engine_options or {}))
    try:
        handles = engine.run(procs, graceful=plan.graceful(), term_all=term_all,
                             notify=(lambda: message.send(plan.sessions, root)) if message else None,
                             sweep=(lambda: _sweep(swept)) if swept else None,
                             sweep_reaches_all=_sweep_reaches_all(procs, swept))
    finally:
        if message is not None:
            message.release()
    result['notice_sent_to'] = message.reached if message else []
    result['freezer'] = engine.freezer.name if engine.freezer is not None else None

    by_session, late = {}, []
    for h in handles:
        s = plan.session_of(h.proc)
        if s is None:
            late.append(h)
        else:
            by_session.setdefault(id(s), []).append(h)
    entries = []
    for s in plan.sessions:
        hs = by_session.get(id(s), [])
        if hs:
            entries.append(session_entry(s, [h.proc for h in hs], clock, addresses.get(id(s), (None, None)), handles=hs))
    if late:
        entries.append(session_entry(None, [h.proc for h in late], clock, handles=late))
    if evidence is not None:
        evidence.write(result['freezer'])
        result['evidence'] = evidence.summary()
    if syslog:
        result['syslog_lines'] = syslog_sessions([e for e in entries if e['process_count']], run_id, reason)
    result.update(session_entries(entries))
    result['survivors'] = bounded([proc_entry(h.proc) for h in engine.survivors])
    result['survivor_count'] = len(engine.survivors)
    result['errors'] = bounded(engine.errors)
    if engine.aborted is not None:
        a = dict(engine.aborted)
        for k in ('killed', 'thawed'):
            a[k + '_count'] = len(a[k])
            a[k] = bounded(a[k])
        result['aborted'] = a
    return result


def _tied_in(snap, plan, uids, scope, kill_other_uids, exclude, judge):
    """What a fresh snapshot holds that the revocation ends: its own plan, plus anything carrying the first
    plan's labels (a process whose session leader is already gone)."""
    again = Plan(snap, uids, scope, kill_other_uids, exclude, judge)
    found = dict((p.identity(), p) for p in again.procs)
    for p in snap.procs.values():
        if p.identity() not in found and plan.tied(p):
            found[p.identity()] = p
    return list(found.values())


def _sweep_uids(plan):
    """Scope all: the UIDs whose kill(-1) catches what forked past every scan.

    Not a user that owns part of this task's own chain (revoking the connecting user), nor one whose UID also
    runs in another PID namespace where it is not them (a root-started container): kill(-1) from here reaches
    every namespace. The per-process kill and rescan loop has to do there. Never root.
    """
    if plan.scope != 'all':
        return set()
    spared_uids = set()
    for p in plan.spared + plan.foreign:
        spared_uids.update(p.uids[:3])
    return set(uid for uid in plan.uids - spared_uids if uid != 0)


def _sweep(uids):
    for uid in sorted(uids):
        kill_all_of_uid(uid)


def _sweep_reaches_all(procs, uids):
    """Whether kill(-1) as ``uids`` signals every one of ``procs``, and so everything they can fork.

    The kernel lets a process signal another whose real or saved UID is its own; a child keeps its parent's real
    UID across fork and exec (a setuid program changes only the effective and saved ones). A process the plan ends
    as another user (kill_other_uids), or that runs as the user only by its effective UID, is not reached.
    """
    return bool(uids) and all(p.uids[0] in uids or p.uids[2] in uids for p in procs)

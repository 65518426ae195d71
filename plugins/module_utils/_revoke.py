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

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import Snapshot, make_reader, own_chain
from ansible_collections.sessionguard.mosh.plugins.module_utils._report import Clock, client_address, proc_entry, session_entry
from ansible_collections.sessionguard.mosh.plugins.module_utils._sessions import Discovery, ExeJudge, is_sshd_connection
from ansible_collections.sessionguard.mosh.plugins.module_utils._terminate import Engine, HAS_PIDFD, kill_all_of_uid
from ansible_collections.sessionguard.mosh.plugins.module_utils._utmp import MoshUtmp

SCOPES = ('mosh', 'interactive', 'all')
KINDS = {'mosh': ('mosh',), 'interactive': ('mosh', 'ssh'), 'all': ('mosh', 'ssh')}
# Time for mosh-server to carry a notice written to the pty to its client before the freeze.
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
        self.spared, self.reported = [], []
        self.labels = {'sids': set(), 'audit': set(), 'logind': set()}
        for s in self.sessions:
            s.kill, s.report = [], []
            for p in s.members:
                if p.pid in self.exclude:
                    self.spared.append(p)
                elif self._endable(s, p):
                    s.kill.append(p)
                else:
                    s.report.append(p)
            self.reported.extend(s.report)
            for k, v in s.labels().items():
                self.labels[k] |= v

    def _endable(self, s, p):
        if p.has_uid(s.uid) or self.kill_other_uids:
            return True
        # The per-connection sshd of the user's own login is that login, whoever owns the process.
        return s.kind in ('ssh', 'other') and is_sshd_connection(p)

    @property
    def procs(self):
        return [p for s in self.sessions for p in s.kill]

    def session_of(self, proc):
        for s in self.sessions:
            if any(p.pid == proc.pid for p in s.members):
                return s
        for s in self.sessions:
            if proc.audit_session in s.labels()['audit'] or proc.sid in s.labels()['sids']:
                return s
        return None

    def tied(self, p):
        """Whether a process seen in a later scan belongs to what this plan ends."""
        if p.pid in self.exclude or p.pid == 1 or p.kernel_thread or p.zombie:
            return False
        if not (any(p.has_uid(u) for u in self.uids) or self.kill_other_uids):
            return False
        if self.scope == 'all' and any(p.has_uid(u) for u in self.uids):
            return True
        return (p.audit_session in self.labels['audit'] or p.sid in self.labels['sids']
                or (p.logind_session and p.logind_session in self.labels['logind']))


def sanitize_message(text):
    """Terminal-safe text: no escape sequences from a variable, lines ended with CR LF."""
    lines = [_CONTROL.sub('', line) for line in text.replace('\r\n', '\n').split('\n')]
    return ('\r\n' + '\r\n'.join(lines) + '\r\n').encode('utf-8', 'replace')


def write_message(sessions, text):
    """Write ``text`` to each session's terminal, as ``write(1)`` would. Returns the ttys reached."""
    data, reached = sanitize_message(text), []
    for tty in sorted(set(s.tty for s in sessions if s.tty)):
        path = '/dev/' + tty
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(fd, data)
            reached.append(tty)
        except OSError:
            pass
        finally:
            os.close(fd)
    return reached


def revoke(targets, scope='mosh', grace_period=5.0, notice=None, check_mode=False,
           kill_other_uids=False, prefer_psutil=True):
    """End the sessions of ``targets`` (resolved users). Returns the module result (without ``changed``)."""
    reader = make_reader(prefer_psutil)
    judge = ExeJudge()
    exclude = own_chain()
    uids = [t.uid for t in targets]
    clock = Clock()
    snap = Snapshot(reader)
    plan = Plan(snap, uids, scope, kill_other_uids, exclude, judge)
    utmp = MoshUtmp()
    # Read while the sessions still exist: a dead leader's sockets are gone.
    addresses = dict((id(s), client_address(s, snap, utmp)) for s in plan.sessions if s.leader is not None)
    result = {
        'scope': scope,
        'process_reader': reader.name,
        'pidfd': HAS_PIDFD,
        'absent_users': [],
        'spared': [proc_entry(p, reason='runs this task (the Ansible connection or its ancestors)') for p in plan.spared],
        'other_uid_processes': [proc_entry(p) for p in plan.reported],
        'survivors': [],
        'notice_sent_to': [],
    }
    seen = set(p.uid for p in snap if p.uid in plan.uids) | set(p.euid for p in snap if p.euid in plan.uids)
    seen |= set(s.uid for s in plan.sessions)
    for t in targets:
        if t.name is None and t.uid not in seen:
            result['absent_users'].append(t.spec)

    if check_mode or not plan.procs:
        result['sessions'] = [session_entry(s, s.kill, clock, addresses.get(id(s), (None, None))) for s in plan.sessions if s.kill]
        return result

    if notice:
        result['notice_sent_to'] = write_message(plan.sessions, notice)
        if result['notice_sent_to']:
            time.sleep(MESSAGE_DELAY)

    def rescan():
        fresh = Snapshot(reader)
        again = Plan(fresh, uids, scope, kill_other_uids, exclude, judge)
        found = dict((p.identity(), p) for p in again.procs)
        for p in fresh:
            if p.identity() not in found and plan.tied(p):
                found[p.identity()] = p
        return list(found.values())

    engine = Engine(grace_period, rescan)
    handles = engine.run(plan.procs, sweep=(lambda: _sweep_uids(plan)) if scope == 'all' else None)

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
    result['sessions'] = entries
    result['survivors'] = [proc_entry(h.proc) for h in engine.survivors]
    result['errors'] = engine.errors
    return result


def _sweep_uids(plan):
    """Scope all: the kernel's kill(-1) as each user catches what forked past every scan.

    Skipped for a user that owns part of this task's own chain (revoking the connecting user),
    where the per-process kill and rescan loop has to do.
    """
    spared_uids = set()
    for p in plan.spared:
        spared_uids.update(p.uids[:3])
    for uid in sorted(plan.uids - spared_uids):
        if uid != 0:
            kill_all_of_uid(uid)

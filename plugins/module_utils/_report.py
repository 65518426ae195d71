# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Turning processes and sessions into compact, JSON-safe result entries.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import annotations

import datetime
import json
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import CLK_TCK, PROC, boot_time
from ansible_collections.sessionguard.mosh.plugins.module_utils._text import cut
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import name_of

# Results travel as AWX job events and a user chooses how many processes they run: every list in a result
# is bounded, with counts that still account for every process. Worst case: SESSIONS_LISTED sessions of
# PROCESSES_LISTED entries of a CMDLINE_MAX command line each, and SESSIONS_BUDGET bytes at most in all; each other
# list LIST_MAX entries. Sizes are JSON bytes, not characters: an emoji is 12 bytes once Ansible escapes it.
CMDLINE_MAX = 160
PROCESSES_LISTED = 10
SESSIONS_LISTED = 30
SESSIONS_BUDGET = 64000
LIST_MAX = 20


def short(text, limit=CMDLINE_MAX):
    return cut(text, limit)


class Clock(object):
    """Converts process start ticks to wall-clock time, once per run."""

    def __init__(self, root=PROC):
        self.boot = boot_time(root)
        self.now = time.time()

    def started(self, proc):
        return self.boot + proc.start_ticks / float(CLK_TCK)

    def iso(self, proc):
        ts = datetime.datetime.fromtimestamp(int(self.started(proc)), datetime.timezone.utc)
        return ts.strftime('%Y-%m-%dT%H:%M:%SZ')

    def age(self, proc):
        return max(0, int(self.now - self.started(proc)))


_NAMES = {}


def user_of(uid):
    if uid not in _NAMES:
        _NAMES[uid] = name_of(uid)
    return _NAMES[uid]


def nameless_uids(snap):
    """[{uid, count}] of the UIDs running processes with no account (``userdel -f`` while they ran)."""
    counts = {}
    for p in snap.procs.values():
        if p.zombie or p.kernel_thread:
            continue
        # Not read in full: the owner of its /proc entry (not root) is the UID it runs as (Proc.may_run_as).
        uid = p.owner if not p.loaded('uids') and p.owner else p.uid
        counts[uid] = counts.get(uid, 0) + 1
    return bounded([{'uid': uid, 'count': n} for uid, n in sorted(counts.items()) if user_of(uid) is None])


def bounded(items, limit=LIST_MAX):
    """The first ``limit`` items; the full count is reported next to the list by the caller."""
    return list(items[:limit])


def proc_entry(proc, **extra):
    entry = {'pid': proc.pid, 'uid': proc.uid, 'user': user_of(proc.uid), 'cmdline': short(proc.command)}
    entry.update(extra)
    return entry


def tcp_peer(snap, proc):
    """(remote ip, remote port) of the first connected TCP socket ``proc`` holds, or (None, None)."""
    table = snap.socket_table(proc, 'tcp')
    for inode in sorted(proc.fds.sockets):
        if inode in table:
            remote = table[inode][1]
            if remote[1]:
                return remote
    return None, None


def client_address(session, snap, utmp):
    """(address, source) of the session's client: mosh from utmp (a hint), ssh from its socket."""
    if session.kind == 'mosh':
        return utmp.last_client(session.leader.pid, user_of(session.leader.uid))
    if session.kind == 'ssh':
        ip, _port = tcp_peer(snap, session.leader)
        return ip, ('socket' if ip else None)
    return None, None


def session_entry(session, procs, clock, address=(None, None), handles=None, signal=None):
    """One session of a revoke result: who, what kind, where from, and the processes ended.

    ``address`` is (client address, source), read before the session's processes were ended.
    """
    ended = {}
    for h in handles or ():
        ended[h.pid] = h.ended_by
    leader = session.leader if session is not None else None
    uid = session.uid if session is not None else (procs[0].uid if procs else None)
    address, source = address
    signals = {}
    for p in procs:
        name = ended.get(p.pid, signal) or 'none'
        signals[name] = signals.get(name, 0) + 1
    # The leader first, then the processes that needed the hardest signal: the most telling ones are kept.
    order = sorted(procs, key=lambda p: (p is not leader, ended.get(p.pid) != 'SIGKILL', p.pid))
    return {
        'user': user_of(uid) if uid is not None else None,
        'uid': uid,
        'kind': session.kind if session is not None else 'other',
        'leader_pid': leader.pid if leader is not None else None,
        'client_address': address,
        'client_address_source': source,
        'tty': session.tty if session is not None else None,
        'identified_by': session.identified_by if session is not None else None,
        'started': clock.iso(leader) if leader is not None else None,
        'process_count': len(procs),
        'signals': signals,
        'processes': [proc_entry(p, signal=ended.get(p.pid, signal)) for p in order[:PROCESSES_LISTED]],
        'processes_truncated': len(procs) > PROCESSES_LISTED,
    }


def session_entries(entries):
    """The ``sessions`` list of a result, bounded, with totals that count every session and process."""
    totals = {'sessions': len(entries), 'processes': 0, 'signals': {}}
    for e in entries:
        totals['processes'] += e['process_count']
        for name, n in e['signals'].items():
            totals['signals'][name] = totals['signals'].get(name, 0) + n
    listed = entries[:SESSIONS_LISTED]
    # Long user names and escaped command lines can still add up: list fewer processes per session until the
    # sessions fit the budget (the counts are untouched).
    keep = PROCESSES_LISTED
    while keep > 1 and len(json.dumps(listed)) > SESSIONS_BUDGET:
        keep //= 2
        for e in listed:
            if len(e['processes']) > keep:
                e['processes'] = e['processes'][:keep]
                e['processes_truncated'] = True
    return {'sessions': listed, 'sessions_truncated': len(entries) > SESSIONS_LISTED, 'totals': totals}

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The live-session audit: who is connected, from where, in what state, with what left running.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import annotations

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import PROC, Snapshot, make_reader, own_chain, read_environ_var
from ansible_collections.sessionguard.mosh.plugins.module_utils._report import Clock, nameless_uids, proc_entry, tcp_peer, user_of
from ansible_collections.sessionguard.mosh.plugins.module_utils._sessions import Discovery, ExeJudge
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import OVERFLOW_UIDS, uid_min
from ansible_collections.sessionguard.mosh.plugins.module_utils._utmp import MoshUtmp

# Bounded lists keep facts small enough for AWX job events.
PROCESS_LIST_MAX = 20
SSH_CONNECTION_NOTE = ('SSH_CONNECTION in the server\'s environment at launch; the user can set it, so it is a '
                       'hint, not proof')
CLIENT_IP_NOTE = 'written to utmp by mosh-server; the user can influence it, so it is a hint, not proof'


def ssh_origin(pid, root=PROC):
    """The SSH connection a process was launched from (``SSH_CONNECTION``: launch time only)."""
    value = read_environ_var(pid, 'SSH_CONNECTION', root)
    parts = value.split() if value else []
    if len(parts) != 4:
        return None
    try:
        return {'client_ip': parts[0], 'client_port': int(parts[1]), 'server_ip': parts[2], 'server_port': int(parts[3])}
    except ValueError:
        return None


def _tied(session):
    procs = [p for p in session.members if p is not session.leader and not p.zombie]
    return {
        'process_count': len(procs),
        'processes': [proc_entry(p) for p in procs[:PROCESS_LIST_MAX]],
        'processes_truncated': len(procs) > PROCESS_LIST_MAX,
    }


def _common(session, clock):
    leader = session.leader
    entry = {
        'kind': session.kind,
        'user': user_of(session.uid),
        'uid': session.uid,
        'leader_pid': leader.pid,
        'started': clock.iso(leader),
        'age_seconds': clock.age(leader),
        'tty': session.tty,
        'audit_session': session.audit_session,
        'logind_session': session.logind_session,
    }
    entry.update(_tied(session))
    return entry


def mosh_state(session, judge, utmp, now):
    """(state, seconds since last client contact or None, source of the state)."""
    child = session.child
    if child is None or child.zombie:
        return 'shell_exited', None, 'process'
    if judge.same_image(child, session.leader):
        # Until the first client packet the pty child is still a mosh-server copy, blocked before exec.
        return 'connecting', None, 'process'
    state, idle = utmp.attachment(session.leader.pid, now)
    if state is None:
        return 'unknown', None, None
    return state, idle, 'utmp'


def mosh_entry(session, snap, judge, utmp, clock):
    server = session.leader
    entry = _common(session, clock)
    entry['server_pid'] = server.pid
    entry['identified_by'] = session.identified_by
    entry.update(judge.describe(server))
    entry['cmdline'] = proc_entry(server)['cmdline']
    udp = snap.socket_table(server, 'udp')
    local = next((udp[i][0] for i in sorted(server.fds.sockets) if i in udp), (None, None))
    entry['bind_address'], entry['udp_port'] = local
    entry['state'], entry['detached_seconds'], entry['state_source'] = mosh_state(session, judge, utmp, clock.now)
    entry['client_ip'], entry['client_ip_source'] = utmp.last_client(server.pid, user_of(server.uid))
    entry['client_ip_note'] = CLIENT_IP_NOTE if entry['client_ip'] else None
    entry['ssh_connection'] = ssh_origin(server.pid, snap.root)
    entry['ssh_connection_note'] = SSH_CONNECTION_NOTE if entry['ssh_connection'] else None
    return entry


def ssh_entry(session, snap, clock):
    entry = _common(session, clock)
    entry['client_ip'], entry['client_port'] = tcp_peer(snap, session.leader)
    return entry


def audit(uids=None, include_ssh=False, prefer_psutil=True, root=PROC):
    """Sessions and orphans on this host. ``uids``: only these users (None: everyone)."""
    reader = make_reader(prefer_psutil, root)
    snap = Snapshot(reader, uids=uids)
    judge = ExeJudge(root)
    clock = Clock(root)
    utmp = MoshUtmp()
    # SSH logins are always discovered so their processes are not mistaken for orphans.
    disc = Discovery(snap, uids=uids, judge=judge)
    found = disc.sessions(('mosh', 'ssh'))
    sessions = []
    for s in found:
        if s.kind == 'mosh':
            sessions.append(mosh_entry(s, snap, judge, utmp, clock))
        elif include_ssh:
            sessions.append(ssh_entry(s, snap, clock))
    return {
        'sessions': sessions,
        'orphans': orphans(disc, snap, uids),
        'process_reader': reader.name,
        'utmp': utmp.utmp_path,
        'utmp_errors': utmp.errors,
        'unreadable': judge.flagged(),
        'nameless_uids': nameless_uids(snap),
    }


def orphans(disc, snap, uids):
    """Per user, live processes tied to no live login: a nohup job whose session is gone."""
    if uids is None:
        lowest = uid_min()
        uids = set(p.uid for p in snap if p.uid >= lowest and p.uid not in OVERFLOW_UIDS)
    out, mine = [], set(own_chain(snap.root))
    for uid in sorted(uids):
        procs = [p for p in disc.unclaimed(uid) if p.pid not in mine]
        if procs:
            out.append({
                'user': user_of(uid),
                'uid': uid,
                'process_count': len(procs),
                'processes': [proc_entry(p) for p in procs[:PROCESS_LIST_MAX]],
                'processes_truncated': len(procs) > PROCESS_LIST_MAX,
            })
    return out

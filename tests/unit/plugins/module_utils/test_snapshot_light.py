# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A snapshot about some users reads most of the table cheaply (stat, owner, loginuid, audit session) and the
rest on demand. Whatever discovery decides from it must be exactly what it decides from a table read in full:
every way a process can be tied to a session is here, by processes of other users too."""

from __future__ import annotations

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import ProcfsReader, Snapshot
from ansible_collections.sessionguard.mosh.plugins.module_utils._report import nameless_uids
from ansible_collections.sessionguard.mosh.plugins.module_utils._revoke import Plan
from ansible_collections.sessionguard.mosh.tests.unit.plugins.module_utils.fakeproc import base_host, scope

USER = 1000
NAMELESS = 48213   # no account has this UID


class CountingReader(ProcfsReader):
    """Records which PIDs were read in full."""

    def __init__(self, root):
        super(CountingReader, self).__init__(root)
        self.full = []

    def complete(self, proc):
        self.full.append(proc.pid)
        return super(CountingReader, self).complete(proc)


def crowded(fp):
    """USER's mosh and SSH logins with everything that ties other users' processes to them, among bystanders."""
    listener = base_host(fp)
    server, shell = fp.mosh_login(USER, session=7, pty=4)
    fp.spawn(shell, 'job', argv=['job', '1'])
    fp.spawn(shell, 'nohup-job', ppid=1)
    fp.spawn(fp.spawn(shell, 'tmux', daemon=True), 'bash')
    # Other UIDs: a sudo root shell of the login (setuid, so root owns its /proc entry), a `sudo -u svc` job,
    # another login's `sudo -u svc` job, a dumpable child of another UID, a setuid helper, a process on the
    # terminal, one in the pty session, one in the login's logind scope only.
    root_shell = fp.spawn(shell, 'bash', uid=0, argv=['-bash'])
    fp.spawn(root_shell, 'vim', uid=0)
    fp.spawn(shell, 'svc-job', uid=1002, ppid=1, setsid=True)
    fp.add(uid=1003, comm='other-login-job', loginuid=USER, sessionid=9, cgroup=scope(USER, 9))
    fp.spawn(shell, 'dumpable', uid=1005, dumpable=True)
    fp.spawn(shell, 'helper', uid=USER, euid=1006)
    fp.add(uid=1004, comm='writer', tty=4, sid=shell.sid)
    fp.add(uid=1007, comm='in-scope', cgroup=scope(USER, 7))
    # An SSH login of USER and one of a bystander.
    for uid, session, pty in ((USER, 8, 1), (1001, 3, 2)):
        login = dict(loginuid=uid, sessionid=session, cgroup=scope(uid, session))
        priv = fp.spawn(listener, 'sshd-session', setsid=True, argv=['sshd-session: u [priv]'], **login)
        user = fp.spawn(priv, 'sshd-session', uid=uid, argv=['sshd-session: u@pts/%d' % pty])
        fp.spawn(user, 'bash', uid=uid, setsid=True, tty=pty)
    # USER's processes tied to no login, and a bystander crowd (one of them nameless).
    fp.add(uid=USER, comm='cron-job', cgroup='0::/system.slice/cron.service\n')
    for i in range(30):
        fp.add(uid=2000 + i % 3, comm='work-%d' % i)
    fp.add(uid=NAMELESS, comm='orphan')
    fp.build()
    return server


def summary(plan):
    return {
        'sessions': [(s.kind, s.uid, s.leader.pid if s.leader else None, s.tty, [p.pid for p in s.members])
                     for s in plan.sessions],
        'kill': sorted(p.pid for p in plan.procs),
        'reported': sorted(p.pid for p in plan.reported),
        'foreign': sorted(p.pid for p in plan.foreign),
        'labels': plan.labels,
    }


@pytest.mark.parametrize('scope_', ['mosh', 'interactive', 'all'])
@pytest.mark.parametrize('kill_other_uids', [False, True])
def test_light_snapshot_plans_exactly_as_a_full_one(fakeproc, scope_, kill_other_uids):
    crowded(fakeproc)
    full = Snapshot(fakeproc.reader())
    reader = CountingReader(fakeproc.root)
    light = Snapshot(reader, uids=[USER])
    want = summary(Plan(full, [USER], scope_, kill_other_uids, (), fakeproc.judge()))
    got = summary(Plan(light, [USER], scope_, kill_other_uids, (), fakeproc.judge()))
    assert got == want
    assert nameless_uids(light) == nameless_uids(full)
    assert {'uid': NAMELESS, 'count': 1} in nameless_uids(full)
    # Read in full up front: USER's processes, root's, and what USER's logins started (loginuid); not the crowd.
    crowd = set(p.pid for p in full if p.name.startswith('work-'))
    assert crowd and not crowd & set(reader.full)
    assert all(not light.get(pid).loaded('cmdline') for pid in crowd)
    # A rescan carrying the records over plans the same.
    again = Snapshot(reader, previous=light, uids=[USER])
    assert summary(Plan(again, [USER], scope_, kill_other_uids, (), fakeproc.judge())) == want


def test_owner_of_proc_entry_never_hides_a_setuid_process_of_the_user(fakeproc):
    """A setuid program the user runs is not dumpable: root owns its /proc entry, and status says whose it is."""
    base_host(fakeproc)
    su = fakeproc.add(uid=USER, euid=0, comm='passwd')
    assert su.owner == 0
    fakeproc.build()
    plan = Plan(Snapshot(ProcfsReader(fakeproc.root), uids=[USER]), [USER], 'all', False, (), fakeproc.judge())
    assert [p.pid for p in plan.procs] == [su.pid]
    # A later scan asks each process whether it is tied before anything else has read its UIDs.
    again = Snapshot(ProcfsReader(fakeproc.root), uids=[USER])
    assert plan.tied(again.get(su.pid))

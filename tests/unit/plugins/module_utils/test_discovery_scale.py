# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A user chooses how many processes they run and how deep they nest: discovery and planning must find all of
them, whatever the count and the depth (no recursion limit, no cap). Each table is planned whole and in part
(the part chosen so that it is itself a consistent process table), and both must be exact.

How the time grows with the count is a benchmark, not a test: benchmarks/scale.py measures it on real
processes, beside pgrep in the same run.
"""

from __future__ import annotations

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import Snapshot
from ansible_collections.sessionguard.mosh.plugins.module_utils._revoke import Plan
from ansible_collections.sessionguard.mosh.tests.unit.plugins.module_utils.fakeproc import base_host

USER = 1000


def plan_of(fp, pids):
    """The plan from a first scan and from a rescan of it (two files per known process), which must agree."""
    reader = fp.reader()
    first = Snapshot(reader, pids=sorted(pids))
    plans = [Plan(snap, [USER], 'mosh', False, (), fp.judge())
             for snap in (first, Snapshot(reader, pids=sorted(pids), previous=first))]
    assert [pids_of(p.procs) for p in plans[1:]] == [pids_of(plans[0].procs)]
    return plans[0]


def pids_of(procs):
    return set(p.pid for p in procs)


def test_fork_chain_8000_deep(fakeproc):
    """Every link leaves the session and has no audit or logind label: only descent ties it to the login."""
    base_host(fakeproc)
    server, shell = fakeproc.mosh_login(USER, session=None, pty=4, tag='tied')
    chain, parent = [], shell
    for _link in range(8000):
        parent = fakeproc.spawn(parent, 'sh', setsid=True, tag='tied')
        chain.append(parent.pid)
    fakeproc.build()
    head = set(fakeproc.specs) - set(chain[2000:])

    for keep in (head, set(fakeproc.specs)):
        plan = plan_of(fakeproc, keep)
        assert pids_of(plan.procs) == fakeproc.pids('tied') & keep
        (s,) = plan.sessions
        assert s.leader.pid == server.pid and len(s.members) == len(fakeproc.pids('tied') & keep)


def population(fp, blocks):
    """``blocks`` blocks of 5,000 processes; in each, one mosh login of USER with 1,250 processes tied to
    it in every way, 10 processes of USER from other logins, 10 other users' mosh logins with 360 processes
    each, and root daemons. Returns the PIDs of each block."""
    out = []
    for b in range(blocks):
        before = set(fp.specs)
        server, shell = fp.mosh_login(USER, session=100 + b, pty=100 + b, tag='tied')
        jobs = [fp.spawn(shell, 'job', argv=['job', str(i)], tag='tied') for i in range(400)]
        for i in range(300):
            fp.spawn(shell, 'nohup-job', ppid=1, tag='tied')
        for i in range(200):
            fp.spawn(fp.spawn(shell, 'escapee', daemon=True, tag='tied'), 'worker', tag='tied')
        parent = jobs[0]
        for i in range(148):
            parent = fp.spawn(parent, 'deep', tag='tied')
        for i in range(10):
            session = 500 + 10 * b + i
            fp.add(uid=USER, comm='cron-job', loginuid=USER, sessionid=session,
                   cgroup='0::/system.slice/cron.service\n', tag='elsewhere')
        for u in range(10):
            other = 2000 + 10 * b + u
            _other_server, other_shell = fp.mosh_login(other, session=1000 + 10 * b + u, pty=1000 + 10 * b + u, tag='bystander')
            for i in range(360):
                fp.spawn(other_shell, 'work', tag='bystander')
        for i in range(5000 - (len(fp.specs) - len(before))):
            fp.add(comm='daemon-%d' % i, cgroup='0::/system.slice/d.service\n', tag='bystander')
        out.append(set(fp.specs) - before)
        assert len(out[-1]) == 5000
    return out


def test_20000_processes_one_user_with_5000_tied(fakeproc):
    base_host(fakeproc)
    blocks = population(fakeproc, 4)
    fakeproc.build()
    tied = fakeproc.pids('tied')
    assert len(tied) == 5000 and len(fakeproc.specs) >= 20000

    for keep in (fakeproc.pids('host') | blocks[0], set(fakeproc.specs)):
        plan = plan_of(fakeproc, keep)
        assert pids_of(plan.procs) == tied & keep
        assert [len(s.members) for s in plan.sessions] == [1250] * (len(plan.sessions))
        assert len(plan.sessions) == len(keep) // 5000
        assert plan.reported == [] and plan.spared == []

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A user chooses how many processes they run and how deep they nest: discovery and planning must find
all of them and stay linear. Each tree is built once and read whole (4n) and in part (n): the part is
chosen so that it is itself a consistent process table.

The time ratio is a guard against quadratic work only, not a benchmark: the best of three runs, in CPU
time of this process. n against 4n rather than 2n: on a loaded machine even that wavers by tens of percent,
which at 2n blurs linear (2x) into quadratic (4x); at 4n linear is 4x, quadratic 16x, and the limit of 8x
sits well between them.
"""

from __future__ import annotations

import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import Snapshot
from ansible_collections.sessionguard.mosh.plugins.module_utils._revoke import Plan
from ansible_collections.sessionguard.mosh.tests.unit.plugins.module_utils.fakeproc import base_host

USER = 1000
RATIO_MAX = 8.0
# Below this a measurement is noise; it keeps a tiny n from failing the ratio on a busy machine.
SLACK = 0.02


def measure(fp, pids, runs):
    """(plan, snapshot seconds, best Discovery + Plan seconds of ``runs`` as (wall, CPU)).

    Each run plans on a fresh snapshot (a rescan of the first: two files per process), so each reads the
    descriptors and builds the indexes again, as the module's first scan does.
    """
    reader = fp.reader()
    t0 = time.perf_counter()
    first = Snapshot(reader, pids=sorted(pids))
    read = time.perf_counter() - t0
    wall = cpu = float('inf')
    for _run in range(runs):
        snap = Snapshot(reader, pids=sorted(pids), previous=first)
        t0, c0 = time.perf_counter(), time.process_time()
        plan = Plan(snap, [USER], 'mosh', False, (), fp.judge())
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return plan, read, (wall, cpu)


def assert_linear(capsys, what, small, large):
    """The ratio is of the CPU time of planning. Wall time is printed, not held to it: on a loaded machine
    it mostly measures waiting for a CPU (for this process and for ExeJudge's helper processes), and
    reading is one pass of system calls over the PIDs."""
    (n, read_n, (wall_n, cpu_n)), (n4, read_4n, (wall_4n, cpu_4n)) = small, large
    with capsys.disabled():
        print('\n%s: n=%d read %.3fs plan %.3fs (cpu %.3fs) | 4n=%d read %.3fs plan %.3fs (cpu %.3fs)'
              ' | ratio read %.2f plan %.2f cpu %.2f (limit %g)'
              % (what, n, read_n, wall_n, cpu_n, n4, read_4n, wall_4n, cpu_4n,
                 read_4n / read_n, wall_4n / wall_n, cpu_4n / cpu_n, RATIO_MAX))
    assert cpu_4n < RATIO_MAX * cpu_n + SLACK


def pids(procs):
    return set(p.pid for p in procs)


def test_fork_chain_8000_deep(fakeproc, capsys):
    """Every link leaves the session and has no audit or logind label: only descent ties it to the login."""
    base_host(fakeproc)
    server, shell = fakeproc.mosh_login(USER, session=None, pty=4, tag='tied')
    chain, parent = [], shell
    for _link in range(8000):
        parent = fakeproc.spawn(parent, 'sh', setsid=True, tag='tied')
        chain.append(parent.pid)
    fakeproc.build()
    head = set(fakeproc.specs) - set(chain[2000:])

    results = []
    for keep in (head, set(fakeproc.specs)):
        plan, read, planned = measure(fakeproc, keep, runs=3)
        assert pids(plan.procs) == fakeproc.pids('tied') & keep
        (s,) = plan.sessions
        assert s.leader.pid == server.pid and len(s.members) == len(fakeproc.pids('tied') & keep)
        results.append((len(keep), read, planned))
    assert_linear(capsys, 'fork chain 2,000 vs 8,000 deep', *results)


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


def test_20000_processes_one_user_with_5000_tied(fakeproc, capsys):
    base_host(fakeproc)
    blocks = population(fakeproc, 4)
    t0 = time.perf_counter()
    fakeproc.build()
    with capsys.disabled():
        print('\nwrote a fake procfs of %d processes in %.1fs' % (len(fakeproc.specs), time.perf_counter() - t0))
    host = fakeproc.pids('host')
    tied = fakeproc.pids('tied')
    assert len(tied) == 5000 and len(fakeproc.specs) >= 20000

    results = []
    for keep in (host | blocks[0], set(fakeproc.specs)):
        plan, read, planned = measure(fakeproc, keep, runs=3)
        assert pids(plan.procs) == tied & keep
        assert [len(s.members) for s in plan.sessions] == [1250] * (len(plan.sessions))
        assert len(plan.sessions) == len(keep) // 5000
        assert plan.reported == [] and plan.spared == []
        results.append((len(keep), read, planned))
    assert_linear(capsys, '5,000 vs 20,000 processes', *results)

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Processes exit and PIDs are reused while the table is read: a snapshot must take a vanished process for
gone (never raise), and a rescan must never take a new process for the old one that had its PID."""

from __future__ import annotations

from ansible_collections.sessionguard.mosh.plugins.module_utils import _procfs
from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import ProcfsReader, Snapshot
from ansible_collections.sessionguard.mosh.plugins.module_utils._revoke import Plan
from ansible_collections.sessionguard.mosh.tests.unit.plugins.module_utils.fakeproc import Spec, base_host

USER = 1000


class CountingReader(ProcfsReader):
    """Records which PIDs were read in full."""

    def __init__(self, root):
        super(CountingReader, self).__init__(root)
        self.full = []

    def read(self, pid):
        self.full.append(pid)
        return super(CountingReader, self).read(pid)


def test_processes_that_vanish_while_read_are_left_out(fakeproc):
    base_host(fakeproc)
    _server, shell = fakeproc.mosh_login(USER, session=7, pty=4, tag='tied')
    no_stat = fakeproc.spawn(shell, 'a')
    no_status = fakeproc.spawn(shell, 'b')
    no_uid = fakeproc.spawn(shell, 'c')
    cut = fakeproc.spawn(shell, 'd')
    gone = fakeproc.spawn(shell, 'e')
    empty = fakeproc.spawn(shell, 'f', fds=[fakeproc.sock('tcp')])
    fakeproc.build()
    fakeproc.remove(no_stat.pid, 'stat')
    fakeproc.remove(no_status.pid, 'status')
    with open('%s/%d/status' % (fakeproc.root, no_uid.pid), 'wb') as f:
        f.write(b'Name:\tc\nState:\tX (dead)\n')
    with open('%s/%d/stat' % (fakeproc.root, cut.pid), 'wb') as f:
        f.write(b'%d (d) S 1' % cut.pid)
    fakeproc.remove(empty.pid, 'cmdline', 'loginuid', 'sessionid', 'cgroup', 'exe', 'ns', 'fd')
    listed = sorted(fakeproc.specs)
    fakeproc.remove(gone.pid)

    snap = Snapshot(fakeproc.reader(), pids=listed + [99999])
    assert set(snap.procs) == set(listed) - {no_stat.pid, no_status.pid, no_uid.pid, cut.pid, gone.pid}
    # What is left of a process half gone reads as absent, not as an error.
    e = snap.get(empty.pid)
    assert (e.cmdline, e.exe, e.loginuid, e.audit_session, e.cgroup, e.netns) == ([], None, None, None, None, None)
    assert not e.fds.readable and e.fds.sockets == set()
    for pid in (no_stat.pid, gone.pid, 99999):
        assert _procfs.read_start_ticks(pid, fakeproc.root) is None
        assert _procfs.read_state(pid, fakeproc.root) is None
    plan = Plan(snap, [USER], 'all', False, (), fakeproc.judge())
    assert set(p.pid for p in plan.procs) == fakeproc.pids('tied') | {empty.pid}


def test_mosh_server_that_exits_after_the_snapshot_is_no_session(fakeproc):
    base_host(fakeproc)
    server, shell = fakeproc.mosh_login(USER, session=7, pty=4, tag='tied')
    fakeproc.build()
    snap = fakeproc.snapshot()
    fakeproc.remove(server.pid)
    fakeproc.remove(shell.pid)
    plan = Plan(snap, [USER], 'mosh', False, (), fakeproc.judge())
    assert plan.sessions == [] and plan.procs == []


def test_rescan_reuses_unchanged_processes_and_rereads_a_reused_pid(fakeproc):
    base_host(fakeproc)
    _server, shell = fakeproc.mosh_login(USER, session=7, pty=4, tag='tied')
    job = fakeproc.spawn(shell, 'job', argv=['job', 'v1'], fds=[fakeproc.sock('unix')])
    old = fakeproc.spawn(shell, 'old', argv=['old'])
    fakeproc.build()
    reader = CountingReader(fakeproc.root)
    first = Snapshot(reader)
    assert sorted(reader.full) == sorted(fakeproc.specs)
    assert first.get(job.pid).fds.sockets == {job.fds[0].inode}

    # Same process (same start time): stopped now, and its argv rewritten, which a rescan does not reread.
    job.state, job.argv, job.fds = 'T', ['job', 'v2'], [fakeproc.sock('unix')]
    # PID reuse: `old` exited and another user's process got its PID.
    fakeproc.write(Spec(pid=old.pid, ppid=1, uid=1001, comm='intruder', start=old.start + 500))
    fakeproc.write(job)
    new = fakeproc.add(uid=USER, comm='new')
    fakeproc.build()
    reader.full = []
    second = Snapshot(reader, previous=first)

    assert sorted(reader.full) == sorted([old.pid, new.pid])
    j = second.get(job.pid)
    assert j is not first.get(job.pid)
    assert (j.state, j.cmdline, j.start_ticks) == ('T', ['job', 'v1'], job.start)
    o = second.get(old.pid)
    assert (o.name, o.uid, o.start_ticks, o.cmdline) == ('intruder', 1001, old.start + 500, ['intruder'])
    assert o.identity() != first.get(old.pid).identity()
    assert second.get(new.pid).name == 'new'
    # A reused record's descriptors are read again, not carried over.
    assert j.fds.sockets == {job.fds[0].inode} != first.get(job.pid).fds.sockets

    fakeproc.remove(job.pid)
    reader.full = []
    third = Snapshot(reader, previous=second)
    assert job.pid not in third.procs and reader.full == []

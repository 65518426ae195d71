# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fake procfs is only worth what its fidelity is: these check it against the kernel's formats and
against the collection's own readers, so that the discovery tests exercise the real parsing."""

from __future__ import annotations

import os

from ansible_collections.sessionguard.mosh.plugins.module_utils import _procfs
from ansible_collections.sessionguard.mosh.tests.unit.plugins.module_utils.fakeproc import (
    BTIME, NETNS, Ptmx, base_host, pts)


def test_stat_line_has_the_kernel_layout(fakeproc):
    spec = fakeproc.add(pid=4242, ppid=7, uid=1000, comm=b'a) S 1 (b', sid=4200, pgrp=4241, tty=3, start=987654)
    raw = spec.stat()
    fields = raw[raw.rindex(b')') + 2:].split()
    # Fields 3 to 52 follow the comm; starttime is field 22.
    assert len(fields) == 50
    assert fields[0] == b'S' and fields[1:5] == [b'7', b'4241', b'4200', str(pts(3)).encode()]
    assert fields[22 - 3] == b'987654'
    assert _procfs.parse_stat(raw)['start_ticks'] == 987654


def test_pts_encoding_round_trips_through_tty_name():
    for n in (0, 3, 255, 256, 257, 4095, 70000):
        assert _procfs.tty_name(pts(n)) == 'pts/%d' % n


def test_reader_sees_every_field_written(fakeproc):
    base_host(fakeproc)
    server, shell = fakeproc.mosh_login(1000, session=7, pty=4)
    job = fakeproc.spawn(shell, 'vim', argv=['vim', 'notes.txt'], environ={'TERM': 'xterm', 'LANG': 'C'})
    fakeproc.build()
    snap = fakeproc.snapshot()
    assert len(snap) == len(fakeproc.specs)
    assert _procfs.boot_time(fakeproc.root) == BTIME

    s = snap.get(server.pid)
    assert (s.ppid, s.uids, s.name, s.state, s.sid, s.tty) == (1, (1000,) * 4, 'mosh-server', 'S', server.pid, None)
    assert (s.loginuid, s.audit_session, s.logind_session) == (1000, 7, '7')
    assert s.cgroup == '/user.slice/user-1000.slice/session-7.scope'
    assert (s.exe, s.exe_deleted, s.netns) == (fakeproc.mosh_exe, False, NETNS)
    assert s.cmdline[:2] == ['mosh-server', 'new'] and s.start_ticks == server.start
    udp_inode = server.fds[0].inode
    assert s.fds.sockets == {udp_inode} and s.fds.pty_masters == [4]
    assert snap.socket_table(s, 'udp')[udp_inode] == (('0.0.0.0', server.fds[0].local[1]), ('0.0.0.0', 0))

    j = snap.get(job.pid)
    assert (j.ppid, j.sid, j.tty, j.cmdline, j.audit_session) == (shell.pid, shell.pid, 'pts/4', ['vim', 'notes.txt'], 7)
    assert _procfs.read_environ_var(job.pid, 'LANG', fakeproc.root) == 'C'
    assert snap.get(shell.pid).tty == 'pts/4'

    k = snap.get(3)
    assert k.kernel_thread and k.cmdline == [] and k.exe is None and k.command == '[kworker/0:0H]'


def test_socket_tables_of_all_families(fakeproc):
    socks = [fakeproc.sock('udp', ('127.0.0.1', 60001)),
             fakeproc.sock('udp6', ('::1', 60002)),
             fakeproc.sock('udp6', ('::ffff:10.0.0.1', 60003)),
             fakeproc.sock('tcp', ('10.0.0.2', 22), ('192.0.2.7', 50000)),
             fakeproc.sock('tcp6', ('2001:db8::1', 22), ('2001:db8::99', 40000)),
             fakeproc.sock('unix')]
    p = fakeproc.add(uid=1000, fds=socks + [Ptmx(9), '/dev/null'])
    fakeproc.build()
    udp = _procfs.read_socket_table(p.pid, 'udp', fakeproc.root)
    tcp = _procfs.read_socket_table(p.pid, 'tcp', fakeproc.root)
    assert udp == {socks[0].inode: (('127.0.0.1', 60001), ('0.0.0.0', 0)),
                   socks[1].inode: (('::1', 60002), ('::', 0)),
                   socks[2].inode: (('10.0.0.1', 60003), ('::', 0))}
    assert tcp == {socks[3].inode: (('10.0.0.2', 22), ('192.0.2.7', 50000)),
                   socks[4].inode: (('2001:db8::1', 22), ('2001:db8::99', 40000))}
    fds = fakeproc.reader().read_fds(p.pid)
    assert fds.sockets == set(s.inode for s in socks) and fds.pty_masters == [9] and fds.readable


def test_zombie_and_kernel_thread_look_as_the_kernel_shows_them(fakeproc):
    z = fakeproc.add(uid=1000, comm='defunct', state='Z', exe=fakeproc.bash_exe, fds=[Ptmx(1)])
    fakeproc.build()
    assert os.listdir(os.path.join(fakeproc.root, str(z.pid), 'fd')) == []
    p = fakeproc.reader().read(z.pid)
    assert p.zombie and p.cmdline == [] and p.exe is None and p.netns is None

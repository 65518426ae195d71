# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils import _procfs


def test_parse_stat_handles_parentheses_and_spaces_in_comm():
    raw = b'4242 (evil) (name) S 1 4241 4241 34817 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0\n'
    f = _procfs.parse_stat(raw)
    assert f['name'] == 'evil) (name'
    assert (f['state'], f['ppid'], f['pgrp'], f['sid'], f['tty_nr'], f['start_ticks']) == ('S', 1, 4241, 4241, 34817, 987654)


@pytest.mark.parametrize('tty_nr, name', [
    (0, None),
    ((136 << 8) | 3, 'pts/3'),
    ((137 << 8) | 1, 'pts/257'),
    ((4 << 8) | 1, 'tty1'),
    ((4 << 8) | 65, 'ttyS1'),
])
def test_tty_name(tty_nr, name):
    assert _procfs.tty_name(tty_nr) == name


def test_hex_addresses_of_proc_net_tables():
    assert _procfs._hex_addr('0100007F:EA61') == ('127.0.0.1', 60001)
    assert _procfs._hex_addr('00000000000000000000000001000000:0016') == ('::1', 22)
    assert _procfs._hex_addr('0000000000000000FFFF00000100007F:EA62') == ('127.0.0.1', 60002)


def test_snapshot_of_this_process_agrees_between_readers():
    """Both readers describe the running test process identically (psutil only where installed)."""
    a = _procfs.Snapshot(_procfs.ProcfsReader(), pids=[os.getpid()]).get(os.getpid())
    assert a.uid == os.getuid() and a.ppid == os.getppid()
    assert a.start_ticks == _procfs.read_start_ticks(os.getpid())
    if _procfs.HAS_PSUTIL:
        b = _procfs.Snapshot(_procfs.PsutilReader(), pids=[os.getpid()]).get(os.getpid())
        for field in ('pid', 'ppid', 'name', 'sid', 'tty_nr', 'start_ticks', 'uids', 'exe', 'exe_deleted',
                      'cmdline', 'loginuid', 'audit_session', 'cgroup'):
            assert getattr(a, field) == getattr(b, field), field


def test_own_chain_starts_with_this_process_and_reaches_init():
    chain = _procfs.own_chain()
    assert chain[0] == os.getpid() and chain[1] == os.getppid()
    assert chain[-1] in (0, 1) or len(chain) >= 2


def test_fds_find_pty_masters_and_sockets():
    master, slave = os.openpty()
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('127.0.0.1', 0))
    try:
        fds = _procfs.ProcfsReader().read_fds(os.getpid())
        assert os.fstat(s.fileno()).st_ino in fds.sockets
        assert len(fds.pty_masters) >= 1
        table = _procfs.read_socket_table(os.getpid(), 'udp')
        assert table[os.fstat(s.fileno()).st_ino][0] == s.getsockname()
    finally:
        s.close()
        os.close(master)
        os.close(slave)

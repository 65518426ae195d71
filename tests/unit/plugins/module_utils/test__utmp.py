# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import struct

from ansible_collections.sessionguard.mosh.plugins.module_utils import _utmp


def record(type_, pid, host, t, user='bob', line='pts/3'):
    return struct.pack(_utmp._FORMAT, type_, 0, pid, line.encode(), b'ts/3', user.encode(), host.encode(),
                       0, 0, 0, int(t), 0, 0, 0, 0, 0, b'')


def test_record_size_matches_glibc():
    assert _utmp.RECORD_SIZE == 384


def test_attached_then_detached_from_wtmp_history(tmp_path):
    utmp, wtmp = tmp_path / 'utmp', tmp_path / 'wtmp'
    utmp.write_bytes(record(7, 100, 'mosh [100]', 1000))
    wtmp.write_bytes(record(7, 100, 'mosh [100]', 900) + record(7, 100, '192.0.2.7 via mosh [100]', 910)
                     + record(7, 100, 'mosh [100]', 1000))
    m = _utmp.MoshUtmp(str(utmp), str(wtmp))
    assert m.last_client(100) == ('192.0.2.7', 'wtmp')
    assert m.attachment(100, now=1010) == ('detached', 40)


def test_attached_record(tmp_path):
    utmp = tmp_path / 'utmp'
    utmp.write_bytes(record(7, 7, '198.51.100.2 via mosh [7]', 50) + record(7, 8, 'sshd', 50))
    m = _utmp.MoshUtmp(str(utmp), str(tmp_path / 'missing'))
    assert m.last_client(7) == ('198.51.100.2', 'utmp')
    assert m.attachment(7, now=60) == ('attached', None)
    assert m.attachment(8, now=60) == (None, None)


def test_never_connected_server_is_not_detached(tmp_path):
    utmp = tmp_path / 'utmp'
    utmp.write_bytes(record(7, 9, 'mosh [9]', 50))
    assert _utmp.MoshUtmp(str(utmp), str(tmp_path / 'missing')).attachment(9, now=200) == (None, None)


def test_a_record_naming_another_servers_pid_is_not_believed(tmp_path):
    """bob's utempter call writes ut_pid = his own process; host text naming alice's server 7 is ignored."""
    utmp = tmp_path / 'utmp'
    utmp.write_bytes(record(7, 7, '198.51.100.2 via mosh [7]', 50, user='alice')
                     + record(7, 4242, '203.0.113.66 via mosh [7]', 60, user='bob'))
    m = _utmp.MoshUtmp(str(utmp), str(tmp_path / 'missing'))
    assert m.last_client(7, 'alice') == ('198.51.100.2', 'utmp')


def test_a_stale_record_of_another_user_under_a_reused_pid_is_not_the_servers(tmp_path):
    utmp = tmp_path / 'utmp'
    utmp.write_bytes(record(7, 7, '203.0.113.66 via mosh [7]', 50, user='bob'))
    m = _utmp.MoshUtmp(str(utmp), str(tmp_path / 'missing'))
    assert m.last_client(7, 'alice') == (None, None)
    assert m.last_client(7, 'bob') == ('203.0.113.66', 'utmp')


def test_long_names_match_by_the_32_bytes_utmp_keeps(tmp_path):
    name = 'Bob.Smith.With.A.Long.Name@corp.example'
    utmp = tmp_path / 'utmp'
    utmp.write_bytes(record(7, 7, '198.51.100.2 via mosh [7]', 50, user=name[:32]))
    assert _utmp.MoshUtmp(str(utmp), str(tmp_path / 'missing')).last_client(7, name) == ('198.51.100.2', 'utmp')

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


def test_history_pairs_a_mosh_servers_rewrites_into_one_login_with_its_clients(tmp_path):
    """mosh-server removes and re-adds its record at each attach and detach: one login, every client address."""
    wtmp = tmp_path / 'wtmp'
    wtmp.write_bytes(record(7, 100, 'mosh [100]', 1000) + record(8, 100, '', 1001)
                     + record(7, 100, '192.0.2.7 via mosh [100]', 1001) + record(8, 100, '', 1100)
                     + record(7, 100, 'mosh [100]', 1100) + record(8, 100, '', 1200)
                     + record(7, 100, '198.51.100.9 via mosh [100]', 1200) + record(8, 100, '', 1500))
    info = _utmp.history(1, now=2000, wtmp_path=str(wtmp))
    assert info['logins_total'] == 1
    (login,) = info['logins']
    assert login['kind'] == 'mosh' and login['user'] == 'bob' and login['pid'] == 100
    assert login['client_ip'] == '192.0.2.7' and login['client_ips'] == ['192.0.2.7', '198.51.100.9']
    assert (login['start'], login['end'], login['duration_seconds'], login['ended_by']) == (
        '1970-01-01T00:16:40Z', '1970-01-01T00:25:00Z', 500, 'logout')


def test_history_ssh_logins_end_at_their_lines_logout_or_a_reboot_and_open_ones_run_until_now(tmp_path):
    wtmp = tmp_path / 'wtmp'
    wtmp.write_bytes(record(7, 5, '203.0.113.4', 1000, user='alice', line='pts/1')
                     + record(7, 6, '203.0.113.5', 1010, user='carol', line='pts/2')
                     + record(8, 5, '', 1060, user='', line='pts/1')
                     + record(2, 0, '6.1.0', 1100, user='reboot', line='~')
                     + record(7, 7, '203.0.113.6', 1200, user='dave', line='pts/1')
                     + record(7, 8, 'tmux(42).%0', 1210, user='dave', line='pts/4'))
    logins = dict((e['user'], e) for e in _utmp.history(1, now=1300, wtmp_path=str(wtmp))['logins'])
    assert sorted(logins) == ['alice', 'carol', 'dave']
    assert (logins['alice']['kind'], logins['alice']['client_ip'], logins['alice']['duration_seconds'],
            logins['alice']['ended_by']) == ('ssh', '203.0.113.4', 60, 'logout')
    assert (logins['carol']['duration_seconds'], logins['carol']['ended_by']) == (90, 'reboot')
    assert (logins['dave']['end'], logins['dave']['duration_seconds'], logins['dave']['ended_by']) == (None, 100, None)


def test_history_keeps_only_the_window_and_says_how_far_wtmp_goes_back(tmp_path):
    wtmp = tmp_path / 'wtmp'
    day = 86400
    wtmp.write_bytes(record(7, 5, '203.0.113.4', 10 * day, line='pts/1') + record(8, 5, '', 10 * day + 5, line='pts/1')
                     + record(7, 6, '203.0.113.5', 19 * day, line='pts/1') + record(8, 6, '', 19 * day + 5, line='pts/1'))
    info = _utmp.history(7, now=20 * day, wtmp_path=str(wtmp))
    assert [e['client_ip'] for e in info['logins']] == ['203.0.113.5']
    assert info['covers_from'] == '1970-01-11T00:00:00Z' and info['since'] == '1970-01-14T00:00:00Z'
    assert _utmp.history(7, wtmp_path=str(tmp_path / 'gone'))['error'].startswith(str(tmp_path / 'gone'))


def test_history_host_text_is_decoded_safely(tmp_path):
    wtmp = tmp_path / 'wtmp'
    wtmp.write_bytes(record(7, 9, '<img/src=x/onerror=alert(1)> via mosh [9]', 50)
                     + record(7, 10, '\x1b[31m via mosh [10]', 60, line='pts/5'))
    ips = [e['client_ip'] for e in _utmp.history(1, now=100, wtmp_path=str(wtmp))['logins']]
    assert ips == ['\\x1b[31m', '<img/src=x/onerror=alert(1)>']

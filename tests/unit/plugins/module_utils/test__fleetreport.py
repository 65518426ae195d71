# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import csv
import io
import json
import re

from ansible_collections.sessionguard.mosh.plugins.module_utils import _fleetreport

HOSTILE = ['=HYPERLINK("http://x")', '+1', '-2', '@SUM(A1)', '\tx', "'=quoted", '<script>alert(1)</script>',
           '<img src=x onerror=alert(1)>', '" onmouseover="alert(1)', 'plain']


def session(user, cmd, ip='192.0.2.7'):
    return {'kind': 'mosh', 'user': user, 'uid': 1001, 'leader_pid': 42, 'state': 'attached', 'client_ip': ip,
            'client_ip_source': 'utmp', 'udp_port': 60001, 'age_seconds': 5, 'detached_seconds': None,
            'process_count': 2, 'suspicious': False, 'cmdline': cmd, 'started': '2026-11-28T04:31:07Z', 'tty': 'pts/1'}


def report():
    hosts = [{'name': 'web01', 'status': 'audited', 'facts': {
        'sessionguard_sessions': [session('u%d' % i, v, ip=v) for i, v in enumerate(HOSTILE)],
        'sessionguard_history': {'since': 'x', 'covers_from': 'y', 'wtmp': '/var/log/wtmp', 'logins_total': 1,
                                 'logins_truncated': False, 'error': None,
                                 'logins': [{'kind': 'ssh', 'user': 'bob', 'client_ip': '=1+1', 'client_ips': ['=1+1'],
                                             'tty': 'pts/2', 'pid': 7, 'start': 'a', 'end': None,
                                             'duration_seconds': 3, 'ended_by': None}]}}},
             {'name': 'web02', 'status': 'unreachable', 'error': 'Connection refused <b>'}]
    return _fleetreport.build(hosts, history_days=7)


def test_csv_neutralizes_formulas_and_round_trips_once_the_apostrophe_is_removed():
    r = report()
    rows = list(csv.DictReader(io.StringIO(_fleetreport.to_csv(r))))
    sessions = [row for row in rows if row['record'] == 'session']
    for row in rows:
        for v in row.values():
            assert not v.startswith(('=', '+', '-', '@', '\t', '\r')), row
    assert [row['command'][1:] if row['command'].startswith("'") else row['command'] for row in sessions] == HOSTILE
    assert [row['host'] for row in rows if row['record'] == 'unreachable'] == ['web02']
    assert [row['client_ip'] for row in rows if row['record'] == 'login'] == ["'=1+1"]


def test_html_escapes_every_value_and_pins_its_one_script():
    page = _fleetreport.to_html(report())
    for v in HOSTILE:
        assert v not in page or v in ('plain', '+1', '-2', '@SUM(A1)', '\tx')
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in page and '&lt;img src=x onerror=alert(1)&gt;' in page
    assert page.count('<script') == 1 and 'src=' not in page.replace('src=x', '')
    csp = re.search(r'content="(default-src[^"]*)"', page).group(1)
    assert "script-src 'sha256-" in csp and "default-src 'none'" in csp
    assert 'web02' in page and 'Connection refused &lt;b&gt;' in page


def test_json_names_unreachable_hosts_and_counts():
    r = json.loads(_fleetreport.to_json(report()))
    assert r['unreachable'] == [{'host': 'web02', 'status': 'unreachable', 'error': 'Connection refused <b>'}]
    assert r['summary']['sessions'] == len(HOSTILE) and r['summary']['hosts_unreachable'] == 1
    assert len(r['history']) == 1
    table = _fleetreport.table(r)
    assert table[1].split()[:2] == ['web01', str(len(HOSTILE))] and table[2].startswith('web02  UNREACHABLE')

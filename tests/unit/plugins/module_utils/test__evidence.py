# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The snapshot's run id, its directory checks and the syslog line format (the live snapshot: tests/live/test_evidence.py)."""

from __future__ import annotations

import os
import syslog

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils._evidence import Evidence, new_run_id, run_id_error, syslog_sessions


@pytest.mark.parametrize('value', ['sg-20261201T021500Z-1a2b3c4d', 'awx-4711-x', 'A', 'a.b:c_d-e', 'x' * 128])
def test_good_run_ids(value):
    assert run_id_error(value) is None


@pytest.mark.parametrize('value', ['', '.hidden', '-x', '../x', 'a/b', 'a b', 'x' * 129, 'a\nb', None, 12])
def test_bad_run_ids_are_named(value):
    assert repr(value) in run_id_error(value)


def test_generated_run_ids_are_valid_and_differ():
    ids = set(new_run_id() for _i in range(50))
    assert len(ids) == 50 and all(run_id_error(i) is None for i in ids)


def test_a_directory_that_cannot_take_the_file_is_reported_before_the_freeze(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    ev = Evidence('r1', directory=str(blocker))
    assert ev.prepare() is False and 'is not usable' in ev.problems[0] and str(blocker) in ev.problems[0]
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    os.chown(str(foreign), 4321, 4321)
    ev = Evidence('r2', directory=str(foreign))
    assert ev.prepare() is False and 'belongs to UID 4321' in ev.problems[0]
    ev.write()
    summary = ev.summary()
    assert summary['missing'] and not summary['complete'] and 'belongs to UID 4321' in summary['reason']


def test_a_usable_directory_is_made_root_only(tmp_path):
    target = tmp_path / 'a' / 'evidence'
    ev = Evidence('r3', directory=str(target))
    assert ev.prepare() is True
    assert oct(os.stat(str(target)).st_mode & 0o777) == '0o700'
    ev.write()     # nothing collected: the probe file goes, the reason says why
    assert os.listdir(str(target)) == [] and 'stopped before the set was frozen' in ev.summary()['reason']


def test_one_syslog_line_per_session_with_every_value_quoted(monkeypatch):
    sent = []
    monkeypatch.setattr(syslog, 'syslog', lambda prio, msg: sent.append((prio, msg)))
    entries = [
        {'user': 'bob', 'uid': 1001, 'kind': 'mosh', 'client_address': '192.0.2.7', 'leader_pid': 42,
         'process_count': 3, 'signals': {'SIGTERM': 1, 'SIGKILL': 2},
         'processes': [{'pid': 42, 'signal': 'SIGTERM'}, {'pid': 43, 'signal': 'SIGKILL'}]},
        {'user': None, 'uid': 1042, 'kind': 'other', 'client_address': None, 'leader_pid': None,
         'process_count': 1, 'signals': {'SIGKILL': 1}, 'processes': [{'pid': 50, 'signal': 'SIGKILL'}]},
    ]
    assert syslog_sessions(entries, 'run-1', 'INC-1\nforged line "x"') == 2
    assert [p for p, _m in sent] == [syslog.LOG_NOTICE] * 2
    first, second = [m for _p, m in sent]
    assert first == ('run_id="run-1" event="session_ended" user="bob" uid=1001 kind="mosh" client="192.0.2.7" '
                     'leader_pid=42 signal="SIGTERM" processes=3 reason="INC-1\\nforged line \\"x\\""')
    assert 'user=null' in second and 'leader_pid=null' in second and 'signal="SIGKILL"' in second
    assert '\n' not in first + second

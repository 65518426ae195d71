# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The revocation log's hash chain and its verifier, on real files; concurrent writers are real processes."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils._revlog import (
    GENESIS, LogError, append, awx_context, default_path, record_hash, verify)

RECORDS = 7


def make_log(path, n=RECORDS):
    for i in range(n):
        append(str(path), {'run_id': 'run-%d' % i, 'host': 'h%02d' % i, 'reason': 'INC-%d' % i, 'users': ['bob']})
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path, lines):
    path.write_bytes(b''.join(lines))


def flip_byte(line):
    """The same record with one byte of its reason changed (the JSON stays valid)."""
    i = line.index(b'"reason":"INC-') + len(b'"reason":"INC-')
    return line[:i] + (b'X' if line[i:i + 1] != b'X' else b'Y') + line[i + 1:]


@pytest.fixture
def log(tmp_path):
    path = tmp_path / 'state' / 'revocations.jsonl'
    return path, make_log(path)


def test_an_intact_chain_verifies_with_its_head(log):
    path, lines = log
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert first['prev'] == GENESIS
    for a, b in zip(lines, lines[1:]):
        assert json.loads(b)['prev'] == json.loads(a)['sha256']
    out = verify(str(path), head=last['sha256'])
    assert out['ok'] and out['records'] == RECORDS and out['head'] == last['sha256'] and out['head_line'] == RECORDS
    # An older head (kept after an earlier run) is still in the chain: later records are later runs.
    assert verify(str(path), head=json.loads(lines[2])['sha256'])['head_line'] == 3
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    assert oct(os.stat(path.parent).st_mode & 0o777) == '0o700'


@pytest.mark.parametrize('index', [0, RECORDS // 2, RECORDS - 1], ids=['first', 'middle', 'last'])
def test_one_changed_byte_names_that_record(log, index):
    path, lines = log
    lines[index] = flip_byte(lines[index])
    rewrite(path, lines)
    out = verify(str(path))
    assert not out['ok']
    assert out['broken']['line'] == index + 1
    assert 'record %d (line %d) was changed' % (index + 1, index + 1) in out['broken']['reason']
    assert out['broken']['run_id'] == 'run-%d' % index


def test_a_changed_last_record_with_its_hash_recomputed_is_caught_by_the_head(log):
    path, lines = log
    head = json.loads(lines[-1])['sha256']
    forged = json.loads(flip_byte(lines[-1]))
    forged['sha256'] = record_hash(forged)
    lines[-1] = json.dumps(forged, sort_keys=True, separators=(',', ':')).encode() + b'\n'
    rewrite(path, lines)
    assert verify(str(path))['ok']     # without the head, nothing vouches for the last record
    out = verify(str(path), head=head)
    assert not out['ok'] and out['broken']['line'] == RECORDS
    assert 'record %d (line %d), was changed' % (RECORDS, RECORDS) in out['broken']['reason']


@pytest.mark.parametrize('index', [0, 3])
def test_a_deleted_record_breaks_the_next_one(log, index):
    path, lines = log
    del lines[index]
    rewrite(path, lines)
    out = verify(str(path))
    assert not out['ok'] and out['broken']['line'] == index + 1
    assert 'does not follow the record before it' in out['broken']['reason']


def test_a_dropped_last_record_is_caught_by_the_head(log):
    path, lines = log
    head = json.loads(lines[-1])['sha256']
    rewrite(path, lines[:-1])
    out = verify(str(path), head=head)
    assert not out['ok'] and 'is not in the log' in out['broken']['reason']
    assert out['broken']['line'] == RECORDS - 1


def test_a_truncated_tail_is_named(log):
    path, lines = log
    head = json.loads(lines[-1])['sha256']
    data = b''.join(lines)
    path.write_bytes(data[:len(data) - len(lines[-1]) // 2])
    out = verify(str(path), head=head)
    assert not out['ok'] and out['broken']['line'] == RECORDS and 'cut short' in out['broken']['reason']
    # Cut at a line end, only the head tells.
    rewrite(path, lines[:3])
    assert verify(str(path))['ok']
    assert not verify(str(path), head=head)['ok']
    path.write_bytes(b'')
    out = verify(str(path), head=head)
    assert not out['ok'] and 'every record was removed' in out['broken']['reason']


def test_append_refuses_a_broken_tail_and_changes_nothing(log):
    path, lines = log
    data = b''.join(lines)
    path.write_bytes(data[:-5])
    with pytest.raises(LogError, match='cut short'):
        append(str(path), {'run_id': 'x'})
    assert path.read_bytes() == data[:-5]
    lines[-1] = flip_byte(lines[-1])
    rewrite(path, lines)
    with pytest.raises(LogError, match='does not match its own sha256'):
        append(str(path), {'run_id': 'x'})
    assert path.read_bytes() == b''.join(lines)


def _writer(path, worker, count):
    for i in range(count):
        # Large records: a line bigger than a pipe buffer or a page would show interleaving at once.
        append(path, {'run_id': 'w%d-%d' % (worker, i), 'host': 'w%d' % worker, 'pad': 'x' * 20000})


def test_many_processes_appending_at_once_keep_one_chain(tmp_path):
    path = str(tmp_path / 'revocations.jsonl')
    workers, each = 16, 25
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_writer, args=(path, w, each)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    out = verify(path)
    assert out['ok'], out['broken']
    assert out['records'] == workers * each
    with open(path, 'rb') as f:
        run_ids = [json.loads(line)['run_id'] for line in f]
    assert sorted(run_ids) == sorted('w%d-%d' % (w, i) for w in range(workers) for i in range(each))


def test_awx_variables_and_their_tower_aliases():
    assert awx_context({'awx_job_id': 12, 'awx_user_name': 'alice', 'tower_job_template_name': 'Revoke'}) == {
        'job_id': 12, 'user_name': 'alice', 'job_template_name': 'Revoke'}
    assert awx_context({'tower_job_id': 7, 'awx_job_id': 8}) == {'job_id': 8}
    assert awx_context({'inventory_hostname': 'x'}) == {}


def test_default_path_is_outside_the_project():
    assert default_path({'XDG_STATE_HOME': '/srv/state'}) == '/srv/state/sessionguard/revocations.jsonl'
    assert default_path({}) == os.path.join(os.path.expanduser('~'), '.local/state/sessionguard/revocations.jsonl')

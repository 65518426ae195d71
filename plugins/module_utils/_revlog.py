# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The revocation log on the controller: one JSON Lines record per host per revocation, hash-chained.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Each record carries ``prev`` (the SHA-256 of the record before it; 64 zeros for the first) and ``sha256`` (of the
record's canonical JSON without its own ``sha256``). Changing a byte of a record breaks its own hash; removing or
inserting one breaks the next record's ``prev``. Only the last record has no successor to vouch for it: the chain
head printed after each run, kept elsewhere, covers it and a truncated tail.

Appends take an exclusive ``flock`` on the log for the read of the tail and the write, so Ansible's forks (separate
processes) and parallel runs on one controller never interleave lines or fork the chain.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os

GENESIS = '0' * 64
FORMAT = 1
_TAIL_BLOCK = 1 << 16
# The AWX/Tower job variables recorded (each as awx_NAME, or the older tower_NAME).
AWX_FIELDS = ('job_id', 'job_template_id', 'job_template_name', 'job_launch_type', 'user_id', 'user_name',
              'user_email', 'inventory_id', 'inventory_name', 'project_revision', 'workflow_job_id',
              'workflow_job_name', 'schedule_name', 'execution_node')


class LogError(Exception):
    """The log cannot be appended to (its tail is broken, or it cannot be opened)."""


# The arguments of sessionguard.mosh.revocation_log and verify_log: their action plugins validate with these and their
# documentation modules declare them, from this one place.
RECORD_ARGS = dict(
    path=dict(type='path'),
    run_id=dict(type='str', required=True),
    reason=dict(type='str', default=''),
    users=dict(type='list', elements='raw', required=True),
    lockout=dict(type='raw'),
    revocation=dict(type='raw'),
    result=dict(type='str', default=''),
    fetch_evidence=dict(type='bool', default=True),
)
VERIFY_ARGS = dict(path=dict(type='path'), head=dict(type='str'))


def default_path(environ=None):
    """``$XDG_STATE_HOME/sessionguard/revocations.jsonl``, else ``~/.local/state/sessionguard/revocations.jsonl``."""
    environ = os.environ if environ is None else environ
    base = environ.get('XDG_STATE_HOME') or os.path.join(os.path.expanduser('~'), '.local', 'state')
    return os.path.join(base, 'sessionguard', 'revocations.jsonl')


def canonical(record):
    """The bytes a record's hash is taken over: sorted keys, no spaces, ASCII, without its own ``sha256``."""
    body = dict((k, v) for k, v in record.items() if k != 'sha256')
    return json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=True).encode('ascii')


def record_hash(record):
    return hashlib.sha256(canonical(record)).hexdigest()


def seal(record, prev):
    """``record`` chained after ``prev``: with ``prev`` and its own ``sha256``. Returns the JSON line (bytes)."""
    record = dict(record)
    record.pop('sha256', None)
    record['prev'] = prev
    record['sha256'] = record_hash(record)
    return record, json.dumps(record, sort_keys=True, separators=(',', ':'), ensure_ascii=True).encode('ascii') + b'\n'


def _last_line(fd):
    """The last line of the open log (with its newline), or b'' for an empty log."""
    size = os.fstat(fd).st_size
    if size == 0:
        return b''
    data, pos = b'', size
    while pos > 0:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
        cut = data.rfind(b'\n', 0, len(data) - 1)
        if cut >= 0:
            return data[cut + 1:]
    return data


def _head_of(line):
    """The ``sha256`` of the last record, checked: appending to a broken tail would hide the damage."""
    if not line.endswith(b'\n'):
        raise LogError('its last line is cut short (no end of line): the log was truncated or is being written '
                       'by something else')
    try:
        record = json.loads(line)
    except ValueError:
        raise LogError('its last line is not a JSON record')
    if not isinstance(record, dict) or record.get('sha256') != record_hash(record):
        raise LogError('its last record does not match its own sha256: it was changed')
    return record['sha256']


def append(path, record):
    """Append ``record`` to the log at ``path`` (created 0600, its directory 0700, when missing), chained after the
    last record, under an exclusive lock. Returns the sealed record. Raises LogError when the tail is broken."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as e:
        raise LogError('cannot open the revocation log %s: %s' % (path, e.strerror))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        line = _last_line(fd)
        try:
            prev = _head_of(line) if line else GENESIS
        except LogError as e:
            raise LogError('not appending to the revocation log %s: %s. Check it with: ansible-playbook '
                           'sessionguard.mosh.verify_log -e sessionguard_log_path=%s' % (path, e, path))
        sealed, data = seal(record, prev)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        return sealed
    finally:
        os.close(fd)    # closing drops the lock


def verify(path, head=None):
    """Check the chain of the log at ``path``. Returns a dict: ``ok``, ``records``, ``head`` (the last record's
    sha256), ``broken`` (None, or the first broken record: ``line``, ``reason`` and, where readable, ``run_id`` and
    ``host``), ``head_line`` (the line of the record ``head`` names, when given and found)."""
    out = {'path': path, 'ok': True, 'records': 0, 'head': None, 'broken': None, 'head_line': None}

    def broken(line_no, reason, record=None):
        out['ok'] = False
        out['broken'] = {'line': line_no, 'reason': reason,
                         'run_id': record.get('run_id') if isinstance(record, dict) else None,
                         'host': record.get('host') if isinstance(record, dict) else None}
        return out

    prev = GENESIS
    with open(path, 'rb') as f:
        for n, line in enumerate(f, 1):
            if not line.endswith(b'\n'):
                return broken(n, 'record %d (line %d) is cut short (no end of line): the log was truncated' % (n, n))
            try:
                record = json.loads(line)
            except ValueError:
                return broken(n, 'line %d is not a JSON record' % n)
            if not isinstance(record, dict) or 'sha256' not in record or 'prev' not in record:
                return broken(n, 'line %d is not a revocation record (no sha256 and prev)' % n, record)
            if record_hash(record) != record['sha256']:
                return broken(n, 'record %d (line %d) was changed: its content does not match its sha256' % (n, n),
                              record)
            if record['prev'] != prev:
                what = ('records before it were removed' if n == 1 else
                        'a record before it was removed, inserted or replaced')
                return broken(n, 'record %d (line %d) does not follow the record before it (%s)' % (n, n, what), record)
            prev = record['sha256']
            out['records'] = n
            if head is not None and prev == head:
                out['head_line'] = n
    out['head'] = prev if out['records'] else None
    if head is not None and out['head_line'] is None:
        n = out['records']
        if n == 0:
            return broken(0, 'the log is empty, but a chain head was given: every record was removed')
        return broken(n, 'the chain head %s is not in the log: the last record, record %d (line %d), was changed, or '
                      'records after it were dropped (the log was truncated)' % (head, n, n))
    return out


def awx_context(task_vars):
    """The AWX/Tower job variables of the run ({} outside AWX): awx_NAME, else the older tower_NAME."""
    out = {}
    for name in AWX_FIELDS:
        for prefix in ('awx_', 'tower_'):
            value = task_vars.get(prefix + name)
            if value is not None and value != '':
                out[name] = value
                break
    return out


def _lockout_summary(lk):
    if not isinstance(lk, dict) or not lk:
        return None
    if lk.get('skipped'):
        return {'skipped': True}
    if lk.get('unreachable'):
        return {'unreachable': True, 'msg': str(lk.get('msg', ''))[:500]}
    users = []
    for u in lk.get('users') or []:
        users.append(dict((k, u.get(k)) for k in ('user', 'uid', 'closed', 'already_closed', 'open', 'persistence')
                          if k in u))
    out = {'changed': bool(lk.get('changed')), 'users': users, 'errors': lk.get('errors') or []}
    if lk.get('failed'):
        out['failed'] = str(lk.get('msg', ''))[:500]
    return out


def _revoke_summary(rv):
    if not isinstance(rv, dict) or not rv:
        return None
    if rv.get('unreachable') or rv.get('skipped'):
        return {'unreachable': bool(rv.get('unreachable')), 'skipped': bool(rv.get('skipped')),
                'msg': str(rv.get('msg', ''))[:500]}
    keep = ('sessions', 'sessions_truncated', 'totals', 'survivors', 'survivor_count', 'aborted', 'absent_users',
            'spared', 'other_uid_processes', 'foreign_processes', 'nameless_uids', 'freezer', 'errors',
            'notice_sent_to', 'syslog_lines', 'scope')
    out = dict((k, rv[k]) for k in keep if k in rv)
    if rv.get('failed'):
        out['failed'] = str(rv.get('msg', ''))[:500]
    return out


def build_record(host, run_id, reason, users, controller, awx, lockout, revoke, result, evidence, check_mode=False,
                 now=None):
    """One host's record of a revocation (before sealing). ``evidence``: the module's evidence summary plus where
    the controller keeps the fetched copy and that copy's hash."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return {
        'format': FORMAT,
        'time': now.strftime('%Y-%m-%dT%H:%M:%S.%fZ'),
        'run_id': run_id,
        'host': host,
        'users': list(users or []),
        'reason': reason,
        'check_mode': bool(check_mode),
        'controller': controller,
        'awx': awx or None,
        'lockout': _lockout_summary(lockout),
        'revocation': _revoke_summary(revoke),
        'result': result,
        'evidence': evidence,
    }

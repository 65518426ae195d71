"""The forensic snapshot of revoke_sessions on live processes: what it records, where, and that it never stops the kill.

- a session holding a deleted copy of mosh-server, a ``nohup`` job with a TCP connection to a listener on this
  machine, and a file held open in /tmp: the snapshot lists all three, the deleted binary with the hash its file had
  before it was deleted;
- the evidence directory read-only (a bind mount: root ignores file modes): the revocation succeeds and says why
  there is no snapshot;
- ``evidence: false``: no snapshot;
- 5,000 processes: a complete file, a module result under 100 KB, and the wall time against ``evidence: false``
  (printed as an ``[evidence]`` line with ``-s``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time

import pytest

from sgtest import procfs
from sgtest.mosh import spoofed_server
from sgtest.waiting import wait_for

pytestmark = pytest.mark.live

MANY = 5000
RESULT_MAX_BYTES = 100 * 1000


def sha256_of(path):
    with open(path, 'rb') as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def load_snapshot(result):
    ev = result['evidence']
    assert ev['path'] and not ev['missing'], ev
    with open(ev['path'], 'rb') as fh:
        data = fh.read()
    assert hashlib.sha256(data).hexdigest() == ev['sha256'] and len(data) == ev['size']
    return json.loads(data)


@pytest.fixture
def evidence_dir(tmp_path):
    path = tmp_path / 'evidence'
    yield str(path)


@pytest.fixture
def listener():
    """A TCP listener on this machine that accepts and holds its connections."""
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(8)
    held = []
    srv.settimeout(0.1)

    def accept():
        try:
            held.append(srv.accept()[0])
        except socket.timeout:
            pass
        return bool(held)

    yield srv.getsockname()[1], accept
    for c in held:
        c.close()
    srv.close()


def find(uid, marker):
    procs = [p for p in procfs.procs_of_uid(uid) if marker in ' '.join(p.cmdline)]
    return procs[0] if procs else None


def test_snapshot_lists_a_deleted_server_a_tcp_nohup_job_and_a_file_in_tmp(default_target, user_factory,
                                                                             mosh_session_factory, bystander,
                                                                             evidence_dir, listener):
    port, accept = listener
    user = user_factory()
    session = mosh_session_factory(user, server=spoofed_server(user))
    server = session.server
    exe = procfs.exe(server.pid)
    before_hash = sha256_of(exe)
    os.unlink(exe)
    marker = 'sgev%d' % os.getpid()
    held_file = '/tmp/%s-held' % marker
    session.send("nohup python3 -c 'import socket,time; s=socket.create_connection((\"127.0.0.1\", %d)); "
                 "time.sleep(100000)' %s-tcp >/dev/null 2>&1 &" % (port, marker))
    session.send("nohup python3 -c 'import time; time.sleep(100000)' %s-file 3>%s >/dev/null 2>&1 &" % (marker, held_file))
    tcp_job = wait_for(lambda: find(user.uid, marker + '-tcp'), 20, 'the nohup TCP job')
    file_job = wait_for(lambda: find(user.uid, marker + '-file'), 20, 'the job holding a file')
    wait_for(accept, 20, 'the TCP connection')
    try:
        result = default_target.run('revoke_sessions', {'users': [user.name], 'grace_period': 2, 'evidence': True,
                                                        'evidence_dir': evidence_dir, 'run_id': 'live-ev-1',
                                                        'reason': 'INC-1 test'})
    finally:
        if os.path.exists(held_file):
            os.unlink(held_file)

    assert not result['failed'], result.get('msg', result)
    assert result['survivors'] == []
    for p in (server, session.shell, tcp_job, file_job):
        assert not p.alive(), p
    ev = result['evidence']
    assert ev['complete'] is True and ev['reason'] is None and ev['run_id'] == 'live-ev-1'
    assert ev['path'] == os.path.join(evidence_dir, 'live-ev-1.json')
    assert oct(os.stat(evidence_dir).st_mode & 0o777) == '0o700'
    snap = load_snapshot(result)
    assert snap['run_id'] == 'live-ev-1' and snap['reason'] == 'INC-1 test' and snap['complete'] is True
    by_pid = dict((p['pid'], p) for p in snap['processes'])
    assert snap['process_count'] == len(by_pid) == ev['process_count']
    # The deleted server copy: flagged deleted, hashed through /proc/PID/exe, the hash of the file before deletion.
    srv = by_pid[server.pid]
    assert srv['exe'] == exe and srv['exe_deleted'] is True
    assert srv['exe_sha256'] == before_hash
    assert any(c['proto'] == 'udp' for c in srv['connections']), srv['connections']
    # The nohup job's TCP connection to the listener.
    tcp = by_pid[tcp_job.pid]
    assert {'proto': 'tcp', 'remote': '127.0.0.1:%d' % port, 'state': 'ESTABLISHED'}.items() <= tcp['connections'][0].items()
    assert tcp['exe_sha256'] == sha256_of(os.path.realpath(tcp['exe']))
    # The file held open in /tmp.
    held = by_pid[file_job.pid]
    assert {'fd': 3, 'path': held_file} in held['files']
    assert held['cwd'] and held['start_time'] and held['uids'][0] == user.uid and 'environ' not in held
    # The session tree and the client-address view.
    [tree] = [s for s in snap['sessions'] if s['kind'] == 'mosh']
    assert tree['leader_pid'] == server.pid and tree['client_address'] == '127.0.0.1'
    assert {server.pid, tcp_job.pid, file_job.pid} <= set(tree['member_pids'])
    assert any(u['host'].startswith('127.0.0.1 via mosh') and u['pid'] == server.pid for u in snap['utmp']), snap['utmp']
    bystander.assert_untouched()


def test_a_read_only_evidence_directory_does_not_stop_the_revocation(default_target, user_factory,
                                                                      mosh_session_factory, bystander, evidence_dir):
    os.makedirs(evidence_dir, 0o700)
    subprocess.run(['mount', '--bind', evidence_dir, evidence_dir], check=True)
    try:
        subprocess.run(['mount', '-o', 'remount,bind,ro', evidence_dir], check=True)
        user = user_factory()
        session = mosh_session_factory(user)
        procs = [session.server, session.shell]
        result = default_target.run('revoke_sessions', {'users': [user.name], 'grace_period': 2, 'evidence': True,
                                                        'evidence_dir': evidence_dir})
    finally:
        subprocess.run(['umount', evidence_dir], check=True)
    assert not result['failed'], result.get('msg', result)
    assert result['changed'] is True and result['survivors'] == []
    assert session.wait_client_exit() == 0
    assert not any(p.alive() for p in procs)
    ev = result['evidence']
    assert ev['missing'] is True and ev['complete'] is False and ev['path'] is None
    assert 'evidence directory %s is not usable' % evidence_dir in ev['reason']
    assert 'Read-only file system' in ev['reason']
    assert os.listdir(evidence_dir) == []
    bystander.assert_untouched()


def test_no_snapshot_without_evidence(default_target, user_factory, mosh_session_factory, evidence_dir):
    user = user_factory()
    session = mosh_session_factory(user)
    result = default_target.run('revoke_sessions', {'users': [user.name], 'grace_period': 2,
                                                    'evidence_dir': evidence_dir})
    assert not result['failed'], result.get('msg', result)
    assert session.wait_client_exit() == 0
    assert result['evidence']['missing'] is True and result['evidence']['reason'] == 'evidence is off'
    assert not os.path.exists(evidence_dir)


def spawn(user, n):
    """``n`` sleeps of ``user`` tied to no login (setpriv from root, a shell that waits for them)."""
    script = 'i=0; while [ $i -lt %d ]; do sleep 100000 & i=$((i+1)); done; wait' % n
    return subprocess.Popen(['setpriv', '--reuid=%d' % user.uid, '--regid=%d' % user.gid, '--clear-groups',
                             'sh', '-c', script], start_new_session=True, cwd='/', stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def revoke_many(target, user, evidence_dir, evidence):
    shell = spawn(user, MANY)
    wait_for(lambda: len(procfs.pids_of_uid(user.uid)) == MANY + 1, 120,
             lambda: '%d processes of %s' % (len(procfs.pids_of_uid(user.uid)), user.name), interval=0.2)
    start = time.monotonic()
    result = target.run('revoke_sessions', {'users': [user.name], 'scope': 'all', 'grace_period': 1,
                                            'evidence': evidence, 'evidence_dir': evidence_dir})
    seconds = time.monotonic() - start
    shell.wait(30)
    assert not result['failed'], result.get('msg', result)
    assert result['totals']['processes'] == MANY + 1 and result['survivors'] == []
    assert procfs.pids_of_uid(user.uid) == []
    return result, seconds


def test_5000_processes_give_a_complete_file_and_a_small_result(default_target, user_factory, evidence_dir, bystander):
    user = user_factory()
    plain, plain_seconds = revoke_many(default_target, user, evidence_dir, False)
    taken, taken_seconds = revoke_many(default_target, user, evidence_dir, True)
    size = len(json.dumps(dict((k, v) for k, v in taken.items() if not k.startswith('_'))))
    ev = taken['evidence']
    print('\n[evidence] %d processes: revocation %.2fs with evidence, %.2fs without (+%.2fs); collected in %.2fs '
          'while frozen; file %d bytes; module result %d bytes'
          % (MANY + 1, taken_seconds, plain_seconds, taken_seconds - plain_seconds, ev['collect_seconds'],
             ev['size'], size))
    assert plain['evidence']['missing'] and not os.path.exists(os.path.join(evidence_dir, plain['run_id'] + '.json'))
    assert ev['complete'] is True, ev['reason']
    assert ev['process_count'] == ev['processes_recorded'] == MANY + 1
    snap = load_snapshot(taken)
    assert len(snap['processes']) == MANY + 1 and snap['complete'] is True
    assert all(p['exe_sha256'] for p in snap['processes'])
    assert size < RESULT_MAX_BYTES
    assert taken_seconds - plain_seconds <= 1.0
    bystander.assert_untouched()

"""Evidence of a revocation across a fleet of 10 hosts run with forks 10, and through ansible-runner as AWX runs it.

- one record per host in the controller's revocation log, the chain verified by ``ansible-playbook
  sessionguard.mosh.verify_log`` and its head the one the revoke summary printed; each record names the reason, the
  controller user and the sessions ended with their client addresses;
- each host's snapshot copied next to the log, its hash the record's; one host whose evidence directory is a
  read-only bind mount is still revoked, and its record says the evidence is missing and why;
- each host's own syslog (rsyslogd inside the host) has one line per ended session with the record's run_id;
- ansible-runner with the job variables AWX sets: they are in the record, and the run id carries the job id.

This module brings up its own fleet of 10 hosts (``FLEET_HOSTS``); the factories work on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import ansible_runner
import pytest

from sgtest.ansible import ansible_env
from sgtest.escapees import start_escapees
from sgtest.fleet import fleet_of
from sgtest.fleet.syslog import auth_log
from sgtest.interpreters import venv_bin

pytestmark = pytest.mark.fleet

FLEET_HOSTS = 10
REASON = 'INC-4242 laptop stolen; "quoted" reason'
EVIDENCE_DIR = '/var/lib/sessionguard/evidence'


@pytest.fixture(scope='module')
def fleet():
    yield from fleet_of(FLEET_HOSTS, 'pt-ev')


@pytest.fixture(scope='module')
def sg_fleet(fleet):
    return fleet


def log_path(fleet):
    return os.path.join(fleet.state_dir, 'log', 'revocations.jsonl')


def log_bytes(fleet):
    """The log's content, or None while no run has written it."""
    try:
        with open(log_path(fleet), 'rb') as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def records_of(fleet, run_id):
    with open(log_path(fleet), 'rb') as fh:
        return [json.loads(line) for line in fh if json.loads(line)['run_id'] == run_id]


def run_id_of(stdout):
    m = re.search(r'revocation log \S+: run (\S+), (\d+) record\(s\), chain head ([0-9a-f]{64})', stdout)
    assert m, stdout
    return m.group(1), int(m.group(2)), m.group(3)


def syslog_lines(host, run_id):
    path = auth_log(host.hostdir)
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8', errors='replace') as fh:
        return [line for line in fh if 'sessionguard[' in line and 'run_id="%s"' % run_id in line]


def sha256_file(path):
    with open(path, 'rb') as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_ten_hosts_with_forks_10_give_one_chained_record_each(fleet, user_factory, mosh_session_factory,
                                                              bystander_factory):
    user = user_factory()
    sessions = {}
    for host in fleet.hosts:
        session = mosh_session_factory(user, host)
        esc = start_escapees(session, ('nohup',))
        sessions[host.name] = (session, [session.server, session.shell] + [e.proc for e in esc.values()])
    bystanders = [bystander_factory(h) for h in fleet.hosts]
    readonly = fleet.hosts[-1]
    readonly.run(['mkdir', '-p', '-m', '0700', EVIDENCE_DIR])
    readonly.run(['mount', '--bind', EVIDENCE_DIR, EVIDENCE_DIR])
    try:
        readonly.run(['mount', '-o', 'remount,bind,ro', EVIDENCE_DIR])
        run = fleet.playbook([{'ansible.builtin.import_playbook': 'sessionguard.mosh.revoke'}],
                             extra_vars={'revoke_users': [user.name], 'revoke_reason': REASON,
                                         'revoke_grace_period': 2}, args=['--forks', '10'])
    finally:
        readonly.run(['umount', EVIDENCE_DIR])

    assert run.rc == 0, run.describe()
    for name, (session, procs) in sessions.items():
        host = fleet.host(name)
        assert session.wait_client_exit() == 0, name
        assert [p for p in procs if p.alive(host.proc_root)] == [], name
    for b in bystanders:
        b.assert_untouched()

    run_id, count, head = run_id_of(run.stdout)
    records = records_of(fleet, run_id)
    assert sorted(r['host'] for r in records) == sorted(h.name for h in fleet.hosts)
    with open(log_path(fleet), 'rb') as fh:
        assert json.loads(fh.read().splitlines()[-1])['sha256'] == head
    checked = fleet.playbook([{'ansible.builtin.import_playbook': 'sessionguard.mosh.verify_log'}],
                             extra_vars={'sessionguard_log_path': log_path(fleet), 'sessionguard_log_head': head})
    assert checked.rc == 0, checked.describe()
    assert '%d record(s), chain intact, head %s' % (count, head) in checked.stdout

    for r in records:
        host = fleet.host(r['host'])
        session, procs = sessions[host.name]
        assert r['reason'] == REASON and r['users'] == [user.name]
        assert r['controller']['user'] == 'root' and r['controller']['uid'] == 0
        assert r['awx'] is None
        assert r['result'].startswith('revoked - 1 session(s)'), r['result']
        [entry] = r['revocation']['sessions']
        assert (entry['leader_pid'], entry['client_address'], entry['user']) == (session.server.pid, '127.0.0.1',
                                                                                 user.name)
        assert {p['pid'] for p in entry['processes']} == {p.pid for p in procs}
        assert r['revocation']['survivors'] == []
        assert [u['user'] for u in r['lockout']['users']] == [user.name] and r['lockout']['users'][0]['closed']
        ev = r['evidence']
        if host is readonly:
            assert ev['missing'] is True and 'Read-only file system' in ev['reason'], ev
            assert 'evidence missing' in r['result']
            continue
        assert ev['complete'] is True, ev
        assert ev['controller_path'] == os.path.join(fleet.state_dir, 'log', 'evidence', host.name, run_id + '.json')
        assert sha256_file(ev['controller_path']) == ev['sha256'] == ev['controller_sha256']
        with open(ev['controller_path'], 'rb') as fh:
            snap = json.load(fh)
        assert snap['run_id'] == run_id and {p.pid for p in procs} <= {p['pid'] for p in snap['processes']}
        assert snap['host'] == host.name
        # The host keeps its copy, in its own root-only directory.
        on_host = host.path(ev['path'])
        assert sha256_file(on_host) == ev['sha256']
        assert oct(os.stat(os.path.dirname(on_host)).st_mode & 0o777) == '0o700'

    for host in fleet.hosts:
        session, _procs = sessions[host.name]
        [line] = syslog_lines(host, run_id)
        assert 'user="%s"' % user.name in line and 'client="127.0.0.1"' in line, line
        assert 'leader_pid=%d' % session.server.pid in line and 'signal="SIGTERM"' in line, line
        assert 'reason=%s' % json.dumps(REASON) in line, line


def test_a_real_run_without_a_reason_changes_nothing(fleet, user_factory, mosh_session_factory):
    host = fleet.hosts[0]
    user = user_factory(hosts=[host])
    session = mosh_session_factory(user, host)
    before = log_bytes(fleet)
    run = fleet.playbook([{'ansible.builtin.import_playbook': 'sessionguard.mosh.revoke'}],
                         extra_vars={'revoke_users': [user.name], 'revoke_reason': '  '})
    assert run.rc != 0
    assert 'Refusing: revoke_reason is empty' in run.stdout, run.stdout
    assert session.client_running() and session.server_alive()
    deny = host.path('/var/lib/sessionguard/deny')
    assert not os.path.exists(deny) or user.name not in open(deny).read().split()
    assert log_bytes(fleet) == before


def test_ansible_runner_with_awx_job_variables_records_them(fleet, user_factory, mosh_session_factory, tmp_path):
    host = fleet.hosts[0]
    user = user_factory(hosts=[host])
    session = mosh_session_factory(user, host)
    project = tmp_path / 'project'
    project.mkdir()
    (project / 'revoke.yml').write_text("- ansible.builtin.import_playbook: sessionguard.mosh.revoke\n")
    awx = {'awx_job_id': 4711, 'awx_job_template_name': 'Revoke access', 'awx_user_name': 'alice',
           'tower_job_id': 4711, 'tower_job_template_name': 'Revoke access', 'tower_user_name': 'alice'}
    env = ansible_env()
    env['PATH'] = os.path.dirname(venv_bin('ansible-playbook')) + os.pathsep + env.get('PATH', '')
    result = ansible_runner.run(
        private_data_dir=str(tmp_path), playbook='revoke.yml', inventory=fleet.inventory_path, limit=host.name,
        extravars=dict(awx, revoke_users=[user.name], revoke_reason='CHG-99 via AWX', revoke_grace_period=2),
        envvars=env, quiet=True)
    stdout = result.stdout.read()
    assert result.status == 'successful' and result.rc == 0, stdout
    assert session.wait_client_exit() == 0
    run_id, _count, _head = run_id_of(stdout)
    assert run_id.startswith('awx-4711-')
    [record] = records_of(fleet, run_id)
    assert record['awx'] == {'job_id': 4711, 'job_template_name': 'Revoke access', 'user_name': 'alice'}
    assert record['reason'] == 'CHG-99 via AWX' and record['host'] == host.name
    assert len(syslog_lines(host, run_id)) == 1
    shutil.rmtree(str(tmp_path / 'artifacts'), ignore_errors=True)

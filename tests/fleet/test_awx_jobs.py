"""The job templates' playbooks run as AWX runs a job (sgtest.awx: an AWX-shaped private data dir given to
ansible-runner), against the fleet: survey answers validated by AWX's rules and written as ``!unsafe`` extra vars,
the job template's fields in ``env/cmdline``, an executable inventory script, slices."""

from __future__ import annotations

import pytest

from sgtest import awx
from sgtest.escapees import start_escapees
from sgtest.lockout import deny_list

pytestmark = pytest.mark.fleet

REVOKE = awx.load_survey('revoke')


@pytest.fixture
def jobs(fleet, sg_scope, tmp_path):
    """run(answers, **template fields) -> awx.Job of the revoke template on the fleet; at the end, the test's users'
    lockouts are lifted with the restore template (which must then leave none)."""
    hosts, groups = awx.fleet_inventory(fleet)

    def run(answers, playbook='revoke.yml', spec=REVOKE, slices=1, **fields):
        extra, errors, ignored = awx.survey_launch(spec, answers)
        assert errors == [] and ignored == [], (errors, ignored)
        template = awx.JobTemplate(playbook=playbook, credential_user='ops', forks=10, limit='fleet', verbosity=1,
                                   **fields)
        if slices > 1:
            return awx.run_sliced(str(tmp_path), template, extra, slices, hosts=hosts, groups=groups)
        return awx.run_job(str(tmp_path), template, extra, hosts=hosts, groups=groups)

    yield run
    names = [u.name for u in sg_scope.users]
    stuck = sorted(set(n for h in fleet.hosts for n in deny_list(h) if n in names))
    if stuck:
        job = run({'restore_users': '\n'.join(stuck), 'restore_force': 'yes'}, playbook='restore.yml',
                  spec=awx.load_survey('restore'))
        assert job.status == 'successful', job.stdout()[-3000:]
        left = [(h.name, n) for h in fleet.hosts for n in deny_list(h) if n in names]
        assert not left, 'restore left locked out: %s' % left


def answers_for(*names, **kw):
    out = {'revoke_users': '\n'.join(names) + '\n', 'revoke_reason': 'INC-1234 left the company',
           'revoke_dry_run': 'no', 'revoke_grace_period': 2, 'revoke_scope': 'all'}
    out.update(kw)
    return out


def sessions_everywhere(fleet, user, mosh_session_factory):
    out = {}
    for host in fleet.hosts:
        session = mosh_session_factory(user, host)
        esc = start_escapees(session, ('nohup', 'setsid'))
        out[host.name] = (session, [session.server, session.shell] + [e.proc for e in esc.values()])
    return out


def dead_on(host, session, procs):
    """What of a session that must be untouched has ended: its client, or which of its processes (named, so that a
    failure says which one)."""
    return ([] if session.client_running() else ['mosh-client']) + [str(p) for p in procs if not p.alive(host.proc_root)]


def summary(job, key='sessionguard_summary'):
    assert key in job.artifacts, job.artifacts
    return job.artifacts[key]


def can_log_in(host, user):
    cp = host.sshd.run_as(user.on(host), 'echo got-in', check=False)
    return cp.returncode == 0 and 'got-in' in cp.stdout


def test_revoke_job_ends_sessions_locks_out_and_publishes_the_summary(fleet, jobs, user_factory,
                                                                      mosh_session_factory, bystander_factory):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)
    bystanders = [bystander_factory(h) for h in fleet.hosts]

    job = jobs(answers_for(user.name))

    assert job.status == 'successful' and job.rc == 0, job.stdout()[-4000:]
    assert "!unsafe 'revoke_users': !unsafe '%s" % user.name in job.extravars_text
    assert job.cmdline.split() == ['-u', 'ops', '--become', '--forks=10', '-l', 'fleet', '-v']
    names = sorted(h.name for h in fleet.hosts)
    s = summary(job)
    assert s['users'] == [user.name] and s['dry_run'] is False and s['all_confirmed'] is True
    assert s['revoked'] == names and s['unreachable'] == [] and s['failed'] == [] and s['not_confirmed'] == []
    assert s['job_id'] == job.id and s['reason'] == 'INC-1234 left the company'
    # The revocation log's chain head and the run id, as the run's summary printed them.
    assert s['log_intact'] is True and len(s['chain_head']) >= 16 and s['run_id'].startswith('awx-%d-' % job.id)
    assert 'chain head %s' % s['chain_head'] in job.stdout()
    assert job.host_status_counts() == {'changed': len(names)}
    for host in fleet.hosts:
        session, procs = sessions[host.name]
        assert session.wait_client_exit() == 0, host.name
        assert not [p for p in procs if p.alive(host.proc_root)], host.name
        assert user.on(host).processes() == [], host.name
        assert not can_log_in(host, user), host.name
    for b in bystanders:
        b.assert_untouched()


def test_one_host_down_fails_the_job_and_the_artifact_names_it(fleet, jobs, user_factory, mosh_session_factory):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)
    down = fleet.hosts[-1]
    down.sshd.cut_off()
    try:
        job = jobs(answers_for(user.name))
    finally:
        down.sshd.start()

    assert job.status == 'failed' and job.rc == 2, job.stdout()[-4000:]
    s = summary(job)
    assert s['unreachable'] == [down.name] and s['not_confirmed'] == [down.name] and s['all_confirmed'] is False
    assert s['revoked'] == sorted(h.name for h in fleet.hosts if h is not down)
    # AWX's host summary: the unreachable host is failed, not hidden among the ok ones by ignore_unreachable.
    assert job.failed_hosts() == [down.name]
    assert job.host_status_counts() == {'changed': len(fleet.hosts) - 1, 'failures': 1}
    failed = [e for e in job.events_of('runner_on_failed') if e['event_data']['host'] == down.name]
    assert failed and 'NOT CONFIRMED on %s' % down.name in failed[-1]['event_data']['res']['msg']
    session, procs = sessions[down.name]
    assert dead_on(down, session, procs) == []
    for host in fleet.hosts[:-1]:
        assert sessions[host.name][0].wait_client_exit() == 0, host.name


@pytest.mark.parametrize('how', ['check_job', 'dry_run_answer'])
def test_a_dry_run_changes_nothing(fleet, jobs, user_factory, mosh_session_factory, how):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)
    before = {h.name: sorted(p.pid for p in user.on(h).processes()) for h in fleet.hosts}

    if how == 'check_job':
        job = jobs(answers_for(user.name, revoke_dry_run='no'), job_type='check')
        assert job.cmdline.startswith('--check ')
    else:
        job = jobs(answers_for(user.name, revoke_dry_run='yes'))

    assert job.status == 'successful', job.stdout()[-4000:]
    s = summary(job)
    assert s['dry_run'] is True and s['would_revoke'] == sorted(h.name for h in fleet.hosts) and s['revoked'] == []
    for host in fleet.hosts:
        session, procs = sessions[host.name]
        assert dead_on(host, session, procs) == [], host.name
        assert sorted(p.pid for p in user.on(host).processes()) == before[host.name]
        assert deny_list(host) == [] and can_log_in(host, user), host.name


def test_a_jinja_user_name_stays_literal_and_is_refused(fleet, jobs, user_factory, mosh_session_factory):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)
    evil = "{{ lookup('pipe', 'id') }}"

    job = jobs(answers_for(user.name, evil))

    assert "!unsafe 'revoke_users': !unsafe '%s" % user.name in job.extravars_text
    assert job.status == 'failed', job.stdout()[-4000:]
    out = job.stdout()
    assert 'user_list: %r is not a valid user' % evil in out, out[-4000:]
    assert 'uid=' not in out
    for host in fleet.hosts:
        session, procs = sessions[host.name]
        assert dead_on(host, session, procs) == [], host.name
        assert deny_list(host) == [] and can_log_in(host, user), host.name


def test_three_slices_publish_three_artifacts(fleet, jobs, user_factory, mosh_session_factory):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)

    slices = jobs(answers_for(user.name), slices=3)

    names = sorted(h.name for h in fleet.hosts)
    assert [j.status for j in slices] == ['successful'] * 3, [j.stdout()[-2000:] for j in slices]
    # Slice k of the hosts sorted by name is hosts[k-1::3] (awx/main/models/inventory.py get_sliced_hosts).
    for k, job in enumerate(slices, 1):
        assert list(job.artifacts) == ['sessionguard_summary_%d' % job.id], job.artifacts
        assert job.artifacts['sessionguard_summary_%d' % job.id]['revoked'] == names[k - 1::3]
    # A workflow node after the sliced job gets the slices' artifacts merged with dict.update
    # (awx/main/models/workflow.py get_effective_artifacts): nothing is overwritten.
    merged = {}
    for job in slices:
        merged.update(job.artifacts)
    assert sorted(h for s in merged.values() for h in s['revoked']) == names
    for host in fleet.hosts:
        assert sessions[host.name][0].wait_client_exit() == 0, host.name
        assert not can_log_in(host, user), host.name


@pytest.mark.parametrize('users', ['one', 'everyone'])
def test_audit_job_takes_the_survey_answers(fleet, jobs, user_factory, mosh_session_factory, users):
    """The textarea names the user; an empty one (which reaches the playbook as null, ansible-core loading AWX's
    ``!unsafe ''`` so) audits everyone."""
    user = user_factory()
    for host in fleet.hosts:
        mosh_session_factory(user, host)
    answers = {'audit_users': user.name + '\n' if users == 'one' else '', 'audit_include_ssh': 'no'}

    job = jobs(answers, playbook='audit.yml', spec=awx.load_survey('audit'))

    assert job.status == 'successful', job.stdout()[-4000:]
    if users == 'everyone':
        assert "!unsafe 'audit_users': !unsafe ''" in job.extravars_text
    for host in fleet.hosts:
        lines = [e['event_data']['res'].get('msg') for e in job.events_of('runner_on_ok')
                 if e['event_data']['host'] == host.name and e['event_data']['task'] == 'Show live sessions']
        assert lines and any('mosh %s pid=' % user.name in line for line in lines[0]), (host.name, lines)

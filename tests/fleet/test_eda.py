"""Event-Driven Ansible end to end: the real ansible-rulebook (Java 17, drools) runs
extensions/eda/rulebooks/revoke_on_idp_event.yml; an identity provider's webhook or a Shared Signals SET posted to
it launches the "Revoke user access" template on a controller stand-in (sgtest.controller), which runs the job
through ansible-runner as AWX would, against the fleet."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from sgtest import ansible, awx
from sgtest.controller import Controller
from sgtest.lockout import deny_list
from sgtest.waiting import wait_for

pytestmark = pytest.mark.fleet

ISSUER = 'https://idp.corp.example'
AUDIENCE = 'https://sessionguard.corp.example/ssf'
CAEP_SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked'
RISC_ACCOUNT_DISABLED = 'https://schemas.openid.net/secevent/risc/event-type/account-disabled'
WEBHOOK_TOKEN = 'webhook-s3cret'
SSF_TOKEN = 'ssf-s3cret'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def b64(n):
    raw = n.to_bytes((n.bit_length() + 7) // 8, 'big')
    return base64.urlsafe_b64encode(raw).rstrip(b'=').decode()


def jwk(key, kid):
    pub = key.public_key().public_numbers()
    return {'kty': 'RSA', 'kid': kid, 'use': 'sig', 'alg': 'RS256', 'n': b64(pub.n), 'e': b64(pub.e)}


class Eda:
    def __init__(self, proc, controller, webhook, ssf, key, log_path):
        self.proc, self.controller, self.webhook, self.ssf, self.key = proc, controller, webhook, ssf, key
        self.log_path = log_path

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def post(self, url, body, headers):
        req = urllib.request.Request(url, data=body, headers=headers, method='POST')
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post_webhook(self, payload, token=WEBHOOK_TOKEN):
        headers = {'Content-Type': 'application/json'}
        if token is not None:
            headers['Authorization'] = 'Bearer %s' % token
        return self.post('http://127.0.0.1:%d/okta' % self.webhook, json.dumps(payload).encode(), headers)

    def make_set(self, user, key=None, kid='test-1', aud=AUDIENCE, iat=None, jti=None, event=CAEP_SESSION_REVOKED):
        now = int(time.time()) if iat is None else iat
        claims = {'iss': ISSUER, 'aud': aud, 'iat': now, 'jti': jti or uuid.uuid4().hex,
                  'events': {event: {'subject': {'format': 'email', 'email': '%s@corp.example' % user},
                                     'event_timestamp': now}}}
        return jwt.encode(claims, key or self.key, algorithm='RS256', headers={'kid': kid, 'typ': 'secevent+jwt'})

    def post_set(self, token_text, bearer=SSF_TOKEN):
        headers = {'Content-Type': 'application/secevent+jwt', 'Accept': 'application/json'}
        if bearer:
            headers['Authorization'] = 'Bearer %s' % bearer
        return self.post('http://127.0.0.1:%d/' % self.ssf, token_text.encode(), headers)

    def wait_jobs(self, count, timeout=300):
        def done():
            jobs = list(self.controller.jobs.values())
            return len(jobs) >= count and all(j['status'] not in ('pending', 'running') for j in jobs)

        def what():
            jobs = [(j['id'], j['status']) for j in self.controller.jobs.values()]
            return 'jobs: %s\nrulebook log:\n%s' % (jobs, self.log()[-3000:])
        wait_for(done, timeout, what)


@pytest.fixture(scope='module')
def eda(fleet, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('eda')
    hosts, groups = awx.fleet_inventory(fleet)
    revoke = awx.JobTemplate(playbook='revoke.yml', credential_user='ops', forks=25, limit='fleet')
    restore = awx.JobTemplate(playbook='restore.yml', credential_user='ops', forks=25, limit='fleet',
                              name='Restore user access')
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp / 'jwks.json').write_text(json.dumps({'keys': [jwk(key, 'test-1')]}))
    webhook, ssf = free_port(), free_port()
    (tmp / 'vars.yml').write_text(yaml.safe_dump({
        'sessionguard_webhook_token': WEBHOOK_TOKEN, 'sessionguard_webhook_port': webhook,
        'sessionguard_ssf_port': ssf, 'sessionguard_ssf_token': SSF_TOKEN,
        'sessionguard_ssf_jwks_file': str(tmp / 'jwks.json'), 'sessionguard_ssf_issuer': ISSUER,
        'sessionguard_ssf_audience': AUDIENCE}))
    (tmp / 'inventory.yml').write_text('all:\n  hosts:\n    localhost:\n      ansible_connection: local\n')
    templates = {'Revoke user access': (revoke, awx.load_survey('revoke')),
                 'Restore user access': (restore, awx.load_survey('restore'))}
    with Controller(str(tmp), templates, hosts, groups) as controller:
        log_path = str(tmp / 'rulebook.log')
        env = ansible.ansible_env({'PATH': os.path.dirname(ansible.venv_bin('ansible-galaxy')) + os.pathsep
                                   + os.environ['PATH'], 'JAVA_HOME': '/usr/lib/jvm/java-17-openjdk-amd64'})
        argv = [ansible.venv_bin('ansible-rulebook'), '-r', 'sessionguard.mosh.revoke_on_idp_event',
                '-i', str(tmp / 'inventory.yml'), '--vars', str(tmp / 'vars.yml'),
                '--controller-url', controller.url, '--controller-token', controller.token, '-v']
        with open(log_path, 'w') as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp),
                                    start_new_session=True)
        e = Eda(proc, controller, webhook, ssf, key, log_path)
        try:
            def listening():
                assert proc.poll() is None, e.log()
                for port in (webhook, ssf):
                    with socket.socket() as s:
                        if s.connect_ex(('127.0.0.1', port)) != 0:
                            return False
                return True
            wait_for(listening, 120, lambda: 'ansible-rulebook to listen:\n' + e.log()[-3000:])
            yield e
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        controller.wait_idle()


@pytest.fixture
def lift(fleet, eda, sg_scope):
    """After the test: the test's users' lockouts lifted through the restore template."""
    yield
    names = [u.name for u in sg_scope.users]
    stuck = sorted(set(n for h in fleet.hosts for n in deny_list(h) if n in names))
    if stuck:
        done = awx.run_job(eda.controller.base_dir, eda.controller.templates['Restore user access'][0],
                           {'restore_users': '\n'.join(stuck), 'restore_force': 'yes'},
                           hosts=eda.controller.hosts, groups=eda.controller.groups)
        assert done.status == 'successful', done.stdout()[-3000:]


def sessions_everywhere(fleet, user, factory):
    return {h.name: factory(user, h) for h in fleet.hosts}


def can_log_in(host, user):
    cp = host.sshd.run_as(user.on(host), 'echo got-in', check=False)
    return cp.returncode == 0 and 'got-in' in cp.stdout


def all_gone(fleet, user):
    return all(user.on(h).processes() == [] for h in fleet.hosts)


def okta_payload(login, event='user.lifecycle.deactivate'):
    return {'eventType': 'com.okta.event_hook', 'eventTypeVersion': '1.0', 'cloudEventsVersion': '0.1',
            'source': 'https://corp.okta.com/api/v1/eventHooks/who8', 'eventId': uuid.uuid4().hex,
            'data': {'events': [{'uuid': uuid.uuid4().hex, 'eventType': event, 'displayMessage': 'Deactivate Okta user',
                                 'target': [{'id': '00u1', 'type': 'User', 'alternateId': login,
                                             'displayName': 'Test User'}]}]}}


def assert_revoked(fleet, eda, user, sessions, posted, label):
    wait_for(lambda: all_gone(fleet, user), 300, lambda: 'sessions of %s to end:\n%s' % (user.name, eda.log()[-3000:]))
    elapsed = time.monotonic() - posted
    eda.wait_jobs(len(eda.controller.jobs))
    job = list(eda.controller.jobs.values())[-1]
    assert job['status'] == 'successful', job['job'].stdout()[-4000:] if job['job'] else job
    assert job['extra']['revoke_users'] == user.name and job['extra']['revoke_dry_run'] == 'no'
    assert job['artifacts']['sessionguard_summary']['revoked'] == sorted(h.name for h in fleet.hosts)
    for host in fleet.hosts:
        assert sessions[host.name].wait_client_exit() == 0, host.name
        assert not can_log_in(host, user), host.name
    with open(os.path.join(os.environ.get('SG_EDA_TIMINGS_DIR', '/tmp'), 'sessionguard-eda-timings.txt'), 'a') as f:
        f.write('%s: %d hosts: %.2f s from POST to the last process gone\n' % (label, len(fleet.hosts), elapsed))
    return elapsed


def test_an_okta_deactivation_revokes_the_user_everywhere(fleet, eda, lift, user_factory, mosh_session_factory):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)

    posted = time.monotonic()
    code = eda.post_webhook(okta_payload('%s@corp.example' % user.name))[0]

    assert code == 200
    assert_revoked(fleet, eda, user, sessions, posted, 'okta webhook')
    launch = eda.controller.launches[-1]
    assert launch['errors'] == [] and launch['ignored'] == []
    assert launch['body']['extra_vars']['revoke_grace_period'] == 2
    assert launch['body']['extra_vars']['revoke_reason'].startswith('Okta: user deactivated (%s@corp.example)' % user.name)


def test_a_generic_suspension_revokes_the_user(fleet, eda, lift, user_factory, mosh_session_factory):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)

    posted = time.monotonic()
    code = eda.post_webhook({'event': 'user.suspended', 'user': user.name, 'id': 'evt-42'})[0]

    assert code == 200
    assert_revoked(fleet, eda, user, sessions, posted, 'generic webhook')


@pytest.mark.parametrize('token', [None, 'wrong-token'])
def test_no_or_a_wrong_token_changes_nothing(fleet, eda, user_factory, mosh_session_factory, token):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)
    launches = len(eda.controller.launches)

    code = eda.post_webhook(okta_payload('%s@corp.example' % user.name), token=token)[0]

    assert code in (400, 401, 500) and code != 200, code
    time.sleep(5)
    assert len(eda.controller.launches) == launches
    for host in fleet.hosts:
        assert sessions[host.name].client_running() and user.on(host).processes(), host.name
        assert can_log_in(host, user), host.name


def test_a_security_event_token_revokes_the_user_and_a_replay_changes_nothing(fleet, eda, lift, user_factory,
                                                                              mosh_session_factory):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)
    token = eda.make_set(user.name)

    posted = time.monotonic()
    code, body = eda.post_set(token)

    assert (code, body) == (202, b'')
    assert_revoked(fleet, eda, user, sessions, posted, 'SSF SET')
    assert eda.controller.launches[-1]['body']['extra_vars']['revoke_reason'].startswith(
        'SSF session revoked from %s' % ISSUER)

    launches = len(eda.controller.launches)
    code, body = eda.post_set(token)
    assert code == 400 and json.loads(body)['err'] == 'invalid_request' and 'replay' in json.loads(body)['description']
    time.sleep(3)
    assert len(eda.controller.launches) == launches


@pytest.mark.parametrize('case, err', [
    ('other_key', 'authentication_failed'),
    ('unknown_kid', 'invalid_key'),
    ('other_audience', 'invalid_audience'),
    ('expired', 'invalid_request'),
    ('no_bearer', None),
])
def test_a_bad_security_event_token_changes_nothing(fleet, eda, user_factory, mosh_session_factory, case, err):
    user = user_factory()
    sessions = sessions_everywhere(fleet, user, mosh_session_factory)
    launches = len(eda.controller.launches)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        'other_key': lambda: eda.make_set(user.name, key=other),
        'unknown_kid': lambda: eda.make_set(user.name, key=other, kid='attacker'),
        'other_audience': lambda: eda.make_set(user.name, aud='https://elsewhere.example'),
        'expired': lambda: eda.make_set(user.name, iat=int(time.time()) - 3600),
        'no_bearer': lambda: eda.make_set(user.name),
    }[case]()

    code, body = eda.post_set(token, bearer=None if case == 'no_bearer' else SSF_TOKEN)

    if err:
        assert code == 400, (code, body)
        assert json.loads(body)['err'] == err, body
    else:
        assert code == 401
    time.sleep(3)
    assert len(eda.controller.launches) == launches
    for host in fleet.hosts:
        assert sessions[host.name].client_running() and user.on(host).processes(), host.name
        assert can_log_in(host, user), host.name


def test_an_unconfirmed_revocation_fires_the_second_rule(fleet, eda, lift, user_factory, mosh_session_factory):
    user = user_factory()
    sessions_everywhere(fleet, user, mosh_session_factory)
    down = fleet.hosts[-1]
    down.sshd.cut_off()
    try:
        code = eda.post_webhook({'event': 'user.deactivated', 'user': user.name, 'id': 'evt-down'})[0]
        assert code == 200
        wait_for(lambda: 'REVOCATION NOT CONFIRMED' in eda.log(), 300, lambda: eda.log()[-3000:])
    finally:
        down.sshd.start()
    job = list(eda.controller.jobs.values())[-1]
    assert job['status'] == 'failed'
    assert job['artifacts']['sessionguard_summary']['not_confirmed'] == [down.name]
    assert "on ['%s']" % down.name in eda.log()

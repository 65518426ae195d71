"""lockout on live logins: a real sshd (UsePAM yes, this machine's /etc/pam.d/sshd), real keys, passwords and mosh.

The sshd here is configured like a stock Debian one where it matters to the lockout (an Include of its
sshd_config.d, password logins, an AuthorizedKeysCommand); see sgtest/lockout.py. Every test leaves the host's
PAM file, the deny list and the drop-in exactly as it found them, and checks so at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from sgtest.lockout import LockoutSshd, directory_style_user, file_state, set_password, shadow_field, tree_state
from sgtest.waiting import wait_for

STATE = '/var/lib/sessionguard'
DENY = STATE + '/deny'
PAM = '/etc/pam.d/sshd'
PASSWORD = 'correct horse 7 battery'


def read_deny():
    try:
        with open(DENY) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@pytest.fixture(scope='module')
def lsshd(sg_harness):
    server = LockoutSshd(sg_harness.hosts[0], os.path.join(sg_harness.state_dir, 'lockout-sshd')).start()
    yield server
    server.stop()


class Host(object):
    """The module under test, run through ansible-playbook against this machine, and the teardown check."""

    def __init__(self, target, sshd, scope):
        self.target, self.sshd, self.scope = target, sshd, scope

    def lockout(self, users, check=False, **args):
        args.update(users=users, sshd_config=self.sshd.config_path)
        return self.target.run('lockout', args, check=check)

    def restore(self, users, **args):
        return self.lockout(users, state='absent', **args)

    def dropin(self):
        path = os.path.join(self.sshd.dropin_dir, 'sessionguard-lockout.conf')
        try:
            with open(path) as f:
                return [line.split()[1] for line in f if line.startswith('DenyUsers ')]
        except FileNotFoundError:
            return None

    def refusals(self, name, since=0):
        """sshd's log lines refusing ``name`` (after byte ``since`` of the log): DenyUsers or the PAM account stack."""
        text = self.sshd.log_text()[since:]
        return [line for line in text.splitlines() if name in line and
                ('DenyUsers' in line or 'PAM account configuration' in line)]


@pytest.fixture
def host(default_target, lsshd, sg_scope):
    before = {'pam': file_state(PAM), 'deny': read_deny(), 'dropin': os.listdir(lsshd.dropin_dir)}
    h = Host(default_target, lsshd, sg_scope)
    yield h
    names = [u.name for u in sg_scope.users]
    problems = []
    left = [n for n in names if n in read_deny() or os.path.exists(os.path.join(STATE, 'lockouts', 'u-' + n + '.json'))]
    if left:
        problems.append('left locked out: %s' % left)
        h.restore(left, force=True)
    for u in sg_scope.users:
        for path in ('/var/spool/cron/crontabs/' + u.name, '/var/lib/systemd/linger/' + u.name):
            if os.path.lexists(path):
                os.unlink(path)
        for job in os.listdir('/var/spool/cron/atjobs'):
            path = os.path.join('/var/spool/cron/atjobs', job)
            if os.lstat(path).st_uid == u.uid and not job.startswith('.'):
                os.unlink(path)
    after = {'pam': file_state(PAM), 'deny': read_deny(), 'dropin': os.listdir(lsshd.dropin_dir)}
    assert not problems and after == before, (problems, before, after)


def user_with_password(sg_scope):
    user = sg_scope.user(prefix='sgl')
    set_password(user, PASSWORD)
    return user


def assert_logs_in(host, user, password=True):
    cp = host.sshd.login(user)
    assert cp.returncode == 0, (cp.stderr, host.sshd.log_text()[-1500:])
    if password:
        cp = host.sshd.password_login(user.name, PASSWORD, host.scope.dir)
        assert cp.returncode == 0, (cp.stderr, host.sshd.log_text()[-1500:])


def assert_refused(host, user, password=True):
    since = len(host.sshd.log_text())
    cp = host.sshd.login(user, 'echo got-in')
    assert cp.returncode == 255 and 'got-in' not in cp.stdout, (cp.returncode, cp.stdout, cp.stderr)
    if password:
        cp = host.sshd.password_login(user.name, PASSWORD, host.scope.dir, 'echo got-in')
        assert cp.returncode == 255 and 'got-in' not in cp.stdout, (cp.returncode, cp.stdout, cp.stderr)
    # Refused by the deny list itself (not only because the key is gone): sshd names the reason.
    wait_for(lambda: host.refusals(user.name, since), 10, 'sshd to log why %s was refused' % user.name)


def assert_mosh_refused(host, user):
    session = host.scope.mosh(user, wait=False, sshd=host.sshd)
    wait_for(lambda: session.client_exit_status() is not None, 30, 'mosh to give up')
    assert session.client_exit_status() != 0
    assert 'mosh-server' not in ' '.join(' '.join(p.cmdline) for p in user.processes())


def ok(result):
    assert not result.get('failed'), result.get('msg', result)
    return result


def test_key_password_and_mosh_are_refused_and_restore_brings_them_back(host, sg_scope, bystander):
    user = user_with_password(sg_scope)
    keys = os.path.join(user.home, '.ssh', 'authorized_keys')
    os.chmod(keys, 0o640)
    os.setxattr(keys, 'user.sessionguard-test', b'label \x00\xff')
    keys_before = file_state(keys)
    assert shadow_field(sg_scope.fleet.hosts[0], user.name) == ''
    assert_logs_in(host, user)

    result = ok(host.lockout([user.name], reason='test offboarding'))

    assert result['changed'] is True
    [r] = result['users']
    assert set(r['closed']) >= {'deny list', 'sshd DenyUsers', 'account expiry (was never)',
                                'key file %s moved to the quarantine' % keys}
    assert r['open'] == [] and result['errors'] == []
    assert result['sshd']['reloaded'] is True
    assert read_deny() == [user.name] and host.dropin() == [user.name]
    assert not os.path.exists(keys)
    assert shadow_field(sg_scope.fleet.hosts[0], user.name) == '1'
    assert_refused(host, user)
    assert_mosh_refused(host, user)
    assert_logs_in(host, bystander.user, password=False)
    bystander.assert_untouched()
    facts = host.target.run('session_facts', {'users': [user.name]})
    [entry] = [e for e in facts['ansible_facts']['sessionguard_lockouts'] if e['user'] == user.name]
    assert entry['reason'] == 'test offboarding' and entry['kept'] == 1 and entry['expiry_changed'] is True

    again = ok(host.lockout([user.name]))
    assert again['changed'] is False and again['users'][0]['closed'] == []
    assert 'deny list' in again['users'][0]['already_closed']

    restored = ok(host.restore([user.name]))
    assert restored['changed'] is True
    assert file_state(keys) == keys_before
    assert shadow_field(sg_scope.fleet.hosts[0], user.name) == ''
    assert read_deny() == [] and host.dropin() is None
    assert_logs_in(host, user)
    assert_logs_in(host, bystander.user, password=False)
    bystander.assert_untouched()
    assert ok(host.restore([user.name]))['changed'] is False


def test_a_set_expiry_date_comes_back(host, sg_scope, bystander):
    user = sg_scope.user(prefix='sgl')
    sg_scope.fleet.hosts[0].run(['chage', '-E', '2031-05-17', user.name])
    before = shadow_field(sg_scope.fleet.hosts[0], user.name)
    assert before == str(int(time.mktime((2031, 5, 17, 0, 0, 0, 0, 0, 0)) - time.timezone) // 86400)
    r = ok(host.lockout([user.name]))['users'][0]
    assert 'account expiry (was 2031-05-17)' in r['closed']
    assert shadow_field(sg_scope.fleet.hosts[0], user.name) == '1'
    assert_logs_in(host, bystander.user, password=False)
    ok(host.restore([user.name]))
    assert shadow_field(sg_scope.fleet.hosts[0], user.name) == before
    bystander.assert_untouched()


def test_check_mode_with_diff_changes_nothing_and_shows_what_would(host, sg_scope, bystander):
    user = user_with_password(sg_scope)
    keys = os.path.join(user.home, '.ssh', 'authorized_keys')
    watched = [PAM, '/etc/shadow', keys, host.sshd.dropin_dir, STATE]
    before = tree_state(watched)
    saved = os.path.join(sg_scope.dir, 'result.json')

    # --check --diff as an operator runs it; the registered result is saved to read the diff back exactly.
    play = host.target.playbook([
        {'name': 'Lock out', 'sessionguard.mosh.lockout': {'users': [user.name], 'sshd_config': host.sshd.config_path},
         'check_mode': True, 'diff': True, 'register': 'r'},
        {'name': 'Save', 'ansible.builtin.copy': {'content': '{{ r | to_json }}', 'dest': saved, 'mode': '0600'},
         'check_mode': False, 'diff': False},
    ])
    assert play.rc == 0, play.describe()
    with open(saved) as f:
        result = json.load(f)

    assert result['changed'] is True
    assert tree_state(watched) == before
    headers = dict((d['before_header'], d) for d in result['diff'])
    assert headers[DENY]['after'] == user.name + '\n'
    assert headers['/etc/shadow: account expiry of %s' % user.name]['after'] == '1970-01-02\n'
    assert headers[keys]['after'] == '(moved to the quarantine)\n'
    assert 'DenyUsers %s' % user.name in headers[os.path.join(host.sshd.dropin_dir, 'sessionguard-lockout.conf')]['after']
    assert ('+' + user.name).encode() in play.stdout and b'+1970-01-02' in play.stdout
    assert_logs_in(host, user)
    bystander.assert_untouched()


def test_a_protected_user_or_bad_name_is_refused_before_anything_changes(host, sg_scope, bystander):
    user = user_with_password(sg_scope)
    other = sg_scope.user(prefix='sgl')
    keys = os.path.join(user.home, '.ssh', 'authorized_keys')
    watched = [PAM, '/etc/shadow', keys, host.sshd.dropin_dir, STATE]
    before = tree_state(watched)

    refused = host.lockout([other.name, user.name], protected_users=['root', user.name])
    assert refused['failed'] and "%r is protected (named in protected_users)" % user.name in refused['msg']
    bad = host.lockout([other.name, 'bad name'])
    assert bad['failed'] and "'bad name' is not a valid user" in bad['msg']
    by_uid = host.lockout([str(user.uid)], protected_users=[user.name])
    assert by_uid['failed'] and 'is protected' in by_uid['msg']

    assert tree_state(watched) == before
    assert_logs_in(host, user)
    assert_logs_in(host, other, password=False)
    bystander.assert_untouched()


def test_a_directory_style_name_with_command_keys_is_refused_by_pam_alone(host, sg_scope, bystander):
    """No key file, no shadow entry, a name DenyUsers cannot express: only the PAM deny list stands in the way."""
    user = directory_style_user(sg_scope)
    host.sshd.command_key(user.name, user.pubkey)
    assert '@' in user.name and shadow_field(sg_scope.fleet.hosts[0], user.name) is None
    assert_logs_in(host, user, password=False)

    result = ok(host.lockout([user.name]))

    [r] = result['users']
    assert r['closed'] == ['deny list']
    assert any('DenyUsers cannot express' in n for n in r['notes'])
    assert any('not a local account' in n for n in r['notes'])
    assert result['sshd']['key_sources']['authorizedkeyscommand'].startswith('/bin/cat ')
    assert host.dropin() is None
    since = len(host.sshd.log_text())
    assert_refused(host, user, password=False)
    assert any('PAM account configuration' in line for line in host.refusals(user.name, since))
    assert_logs_in(host, bystander.user, password=False)

    ok(host.restore([user.name]))
    assert_logs_in(host, user, password=False)
    bystander.assert_untouched()


def test_ten_concurrent_lockouts_leave_exactly_ten_entries(host, sg_scope, bystander):
    users = [sg_scope.user(prefix='sgc') for _i in range(10)]
    results = {}
    go = threading.Barrier(10)

    def one(u):
        go.wait()
        results[u.name] = host.lockout([u.name])

    threads = [threading.Thread(target=one, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for name, r in results.items():
        ok(r)
    assert len(results) == 10
    assert sorted(read_deny()) == sorted(u.name for u in users)
    assert sorted(host.dropin()) == sorted(u.name for u in users)
    with open(PAM) as f:
        assert f.read().count('pam_listfile.so') == 1
    assert_refused(host, users[0], password=False)
    assert_refused(host, users[-1], password=False)
    assert_logs_in(host, bystander.user, password=False)

    ok(host.restore([u.name for u in users]))
    assert read_deny() == []
    assert_logs_in(host, users[3], password=False)
    bystander.assert_untouched()


def test_a_broken_sshd_config_fails_the_host_but_the_rest_of_the_lockout_happens(host, sg_scope, bystander):
    user = user_with_password(sg_scope)
    keys = os.path.join(user.home, '.ssh', 'authorized_keys')
    broken = os.path.join(host.sshd.dropin_dir, 'zz-broken.conf')
    sshd_pid, sshd_start = host.sshd.pid, host.sshd.starttime
    with open(broken, 'w') as f:
        f.write('NoSuchOption yes\n')
    try:
        result = host.lockout([user.name])
        assert result['failed']
        assert 'NoSuchOption' in result['msg'] and 'does not validate' in result['msg']
        [r] = result['users']
        assert 'deny list' in r['closed'] and 'account expiry (was never)' in r['closed']
        assert 'key file %s moved to the quarantine' % keys in r['closed']
        assert 'sshd DenyUsers' not in r['closed']
        assert host.dropin() is None and not os.path.exists(keys)
        assert shadow_field(sg_scope.fleet.hosts[0], user.name) == '1'
        # sshd was not reloaded (a reload would have read the broken file and stopped it) and still serves.
        assert host.sshd.running() and (host.sshd.pid, host.sshd.starttime) == (sshd_pid, sshd_start)
        assert_logs_in(host, bystander.user, password=False)
        assert_refused(host, user)
    finally:
        os.unlink(broken)
    ok(host.restore([user.name]))
    assert_logs_in(host, user)
    bystander.assert_untouched()


def revoke_with_lockout(host, user, **lockout):
    """revoke_sessions closing the door in the same run: one module execution ends the sessions after the lockout."""
    lockout.setdefault('sshd_config', host.sshd.config_path)
    return host.target.run('revoke_sessions', {'users': [user.name], 'scope': 'all', 'grace_period': 3,
                                               'reason': 'test offboarding', 'lockout': lockout})


def test_revoke_sessions_with_lockout_closes_the_door_and_ends_the_session_in_one_run(host, sg_scope, bystander):
    user = user_with_password(sg_scope)
    keys = os.path.join(user.home, '.ssh', 'authorized_keys')
    session = sg_scope.mosh(user, sshd=host.sshd)
    server = session.server

    result = ok(revoke_with_lockout(host, user))

    assert result['changed'] is True
    [r] = result['lockout']['users']
    assert set(r['closed']) >= {'deny list', 'sshd DenyUsers', 'account expiry (was never)',
                                'key file %s moved to the quarantine' % keys}
    assert r['open'] == [] and result['lockout']['errors'] == [] and result['lockout']['changed'] is True
    assert result['survivors'] == [] and result['totals']['processes'] >= 2
    assert server.pid in [s['leader_pid'] for s in result['sessions'] if s['kind'] == 'mosh']
    # The session ended (the client got mosh's clean shutdown) and nothing of the user is left.
    assert session.wait_client_exit() == 0
    assert not server.alive() and user.processes() == []
    # And the door is closed on the host, as the lockout module would have closed it.
    assert read_deny() == [user.name] and host.dropin() == [user.name] and not os.path.exists(keys)
    assert shadow_field(sg_scope.fleet.hosts[0], user.name) == '1'
    assert_refused(host, user)
    assert_logs_in(host, bystander.user, password=False)
    bystander.assert_untouched()
    facts = host.target.run('session_facts', {'users': [user.name]})
    [entry] = [e for e in facts['ansible_facts']['sessionguard_lockouts'] if e['user'] == user.name]
    assert entry['reason'] == 'test offboarding'

    ok(host.restore([user.name]))
    assert read_deny() == [] and host.dropin() is None
    assert_logs_in(host, user)
    bystander.assert_untouched()


def test_revoke_sessions_ends_the_session_even_when_the_lockout_fails_part_way(host, sg_scope, bystander):
    user = user_with_password(sg_scope)
    broken = os.path.join(host.sshd.dropin_dir, 'zz-broken.conf')
    sshd_pid, sshd_start = host.sshd.pid, host.sshd.starttime
    session = sg_scope.mosh(user, sshd=host.sshd)
    server = session.server
    with open(broken, 'w') as f:
        f.write('NoSuchOption yes\n')
    try:
        result = revoke_with_lockout(host, user)

        # The task fails, naming the lockout's problem...
        assert result['failed']
        assert result['msg'].startswith('lockout: ') and 'NoSuchOption' in result['msg'] \
            and 'does not validate' in result['msg'], result['msg']
        assert result['lockout']['failed'] and 'does not validate' in result['lockout']['msg']
        [r] = result['lockout']['users']
        assert 'deny list' in r['closed'] and 'sshd DenyUsers' not in r['closed']
        # ...but the kill went on, and every result key is there.
        assert result['totals']['processes'] >= 2 and result['survivors'] == []
        assert server.pid in [s['leader_pid'] for s in result['sessions'] if s['kind'] == 'mosh']
        assert session.wait_client_exit() == 0
        assert not server.alive() and user.processes() == []
        # What could be closed was: the deny list holds without the drop-in, and sshd was neither reloaded nor stopped.
        assert host.dropin() is None and read_deny() == [user.name]
        assert host.sshd.running() and (host.sshd.pid, host.sshd.starttime) == (sshd_pid, sshd_start)
        assert_refused(host, user)
        assert_logs_in(host, bystander.user, password=False)
    finally:
        os.unlink(broken)
    ok(host.restore([user.name]))
    assert_logs_in(host, user)
    bystander.assert_untouched()


def test_revoke_sessions_refuses_a_protected_user_before_closing_the_door_or_killing(host, sg_scope, bystander):
    user = user_with_password(sg_scope)
    keys = os.path.join(user.home, '.ssh', 'authorized_keys')
    session = sg_scope.mosh(user, sshd=host.sshd)
    watched = [PAM, '/etc/shadow', keys, host.sshd.dropin_dir, STATE]
    before = tree_state(watched)

    refused = revoke_with_lockout(host, user, protected_users=[user.name])

    assert refused['failed'] and "%r is protected (named in protected_users)" % user.name in refused['msg']
    assert 'totals' not in refused
    assert tree_state(watched) == before
    assert session.server.alive() and session.client_exit_status() is None
    bystander.assert_untouched()


def crontab(user):
    return subprocess.run(['crontab', '-l', '-u', user.name], capture_output=True, text=True, check=False)


def atq_of(user):
    out = subprocess.run(['atq'], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.split()[-1:] == [user.name]]


def test_persistence_is_reported_set_aside_and_restored_byte_identical(host, sg_scope, bystander):
    user = sg_scope.user(prefix='sgl')
    subprocess.run(['crontab', '-u', user.name, '-'], input='17 3 * * * echo sessionguard-test\n', text=True, check=True)
    # The at job is queued by the user, through a real login (at(1) makes the job file theirs).
    host.sshd.run_as(user, 'echo echo sessionguard-test | at now + 2 hours 2>&1')
    linger = '/var/lib/systemd/linger/' + user.name
    os.makedirs(os.path.dirname(linger), exist_ok=True)
    open(linger, 'w').close()
    [job] = atq_of(user)
    spool = ['/var/spool/cron/crontabs/' + user.name, linger] + [
        os.path.join('/var/spool/cron/atjobs', j) for j in os.listdir('/var/spool/cron/atjobs')
        if not j.startswith('.') and os.lstat(os.path.join('/var/spool/cron/atjobs', j)).st_uid == user.uid]
    before = tree_state(spool)
    assert len(before) == 3 and all(before.values())

    reported = ok(host.lockout([user.name]))['users'][0]['persistence']
    assert reported['crontab'] and reported['crontab_lines'] == 1 and reported['linger']
    assert reported['at_job_count'] == 1 and len(reported['at_jobs']) == 1
    assert tree_state(spool) == before and atq_of(user) == [job]

    disabled = ok(host.lockout([user.name], persistence='disable'))['users'][0]
    assert 'crontab %s moved to the quarantine' % spool[0] in disabled['closed']
    assert 'linger flag %s moved to the quarantine' % linger in disabled['closed']
    assert any(c.startswith('at job ') for c in disabled['closed'])
    assert 'no crontab for' in crontab(user).stderr
    assert atq_of(user) == [] and not os.path.exists(linger)
    again = ok(host.lockout([user.name], persistence='disable'))
    assert again['changed'] is False
    assert set(again['users'][0]['already_closed']) >= {'crontab (set aside)', 'at job (set aside)', 'linger flag (set aside)'}

    ok(host.restore([user.name]))
    assert tree_state(spool) == before
    assert crontab(user).stdout == '17 3 * * * echo sessionguard-test\n'
    assert atq_of(user) == [job]
    bystander.assert_untouched()


def test_restore_refuses_a_user_whose_keys_changed_unless_forced(host, sg_scope, bystander):
    user = sg_scope.user(prefix='sgl')
    keys = os.path.join(user.home, '.ssh', 'authorized_keys')
    original = file_state(keys)
    ok(host.lockout([user.name]))
    with open(keys, 'w') as f:
        f.write('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdminPutThisHere admin-added\n')
    os.chown(keys, user.uid, user.gid)
    added = file_state(keys)
    sg_scope.fleet.hosts[0].run(['chage', '-E', '2040-01-01', user.name])

    refused = host.restore([user.name])
    assert refused['failed']
    [r] = refused['users']
    assert any(keys in d and 'sha256 %s' % added['sha256'] in d and 'sha256 %s' % original['sha256'] in d
               for d in r['refused'])
    assert any('account expiry: now 2040-01-01; the lockout set 1970-01-02, and it was never before' == d
               for d in r['refused'])
    assert file_state(keys) == added and read_deny() == [user.name]

    forced = ok(host.restore([user.name], force=True))
    [r] = forced['users']
    assert file_state(keys) == original
    assert shadow_field(sg_scope.fleet.hosts[0], user.name) == ''
    [aside] = [k for k in r['kept_aside'] if keys in k]
    kept_dir = aside.rsplit(' -> ', 1)[1]
    assert file_state(os.path.join(kept_dir, os.listdir(kept_dir)[0]))['sha256'] == added['sha256']
    shutil.rmtree(kept_dir)
    assert_logs_in(host, user, password=False)
    bystander.assert_untouched()

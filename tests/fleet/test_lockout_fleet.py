"""The door closed on a fleet: revoke.yml and restore.yml through ansible-playbook over SSH (as ops, with become).

Each host's sshd is configured like a stock Debian one for these tests (the fleet's sshd_config includes
sshd_config.d first): a drop-in turns on password logins and an AuthorizedKeysCommand, so every way in is tried
for real. Each host has its own /var/lib/sessionguard, cron spool and linger directory (sgtest/fleet/privatevar.py).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from xml.etree import ElementTree

import pytest

from sgtest import ansible, procfs
from sgtest.escapees import start_escapees
from sgtest.fleet import ldap
from sgtest.lockout import deny_list, file_state, password_login, shadow_field
from sgtest.users import TestUser
from sgtest.waiting import wait_for

pytestmark = pytest.mark.fleet

PASSWORD = 'fleet horse 9 staple'
TEST_DROPIN = '/etc/ssh/sshd_config.d/00-sgtest-logins.conf'
AKC_DIR = '/etc/ssh/akc'


def pidfile_mtime(host):
    try:
        return os.stat(host.path('/run/sshd.pid')).st_mtime_ns
    except FileNotFoundError:
        return None


def reload_sshd(host):
    """SIGHUP through the host's init; sshd removes its PidFile and writes it again once it listens anew."""
    before = pidfile_mtime(host)
    host.signal_init(signal.SIGHUP)
    wait_for(lambda: pidfile_mtime(host) not in (None, before) and host.sshd.listening(), 15,
             'sshd of %s to reload' % host.name)


@pytest.fixture(scope='module')
def logins(fleet):
    """Password logins and an AuthorizedKeysCommand on every host, as a stock sshd with those settings."""
    for host in fleet.hosts:
        os.makedirs(host.path(AKC_DIR), mode=0o755, exist_ok=True)
        with open(host.path(TEST_DROPIN), 'w') as f:
            f.write('PasswordAuthentication yes\nAuthorizedKeysCommand /bin/cat %s/%%u\nAuthorizedKeysCommandUser root\n'
                    % AKC_DIR)
        reload_sshd(host)
    yield fleet
    for host in fleet.hosts:
        os.unlink(host.path(TEST_DROPIN))
        reload_sshd(host)


@pytest.fixture
def clean_door(logins, sg_scope):
    """After the test: no lockout of the test's users left on any host (lifted with force if one is)."""
    yield
    left = {}
    for host in logins.hosts:
        names = [u.name for u in sg_scope.users]
        stuck = [n for n in deny_list(host) if n in names]
        if stuck:
            left[host.name] = stuck
            run_playbook(logins, 'restore', {'restore_users': stuck, 'restore_force': True,
                                             'sessionguard_hosts': host.name})
    assert not left, 'left locked out: %s' % left


def run_playbook(fleet, name, extra_vars, args=()):
    """``ansible-playbook sessionguard.mosh.NAME -i INVENTORY [args] -e JSON`` as an operator types it."""
    argv = [ansible.venv_bin('ansible-playbook'), 'sessionguard.mosh.%s' % name, '-i', fleet.inventory_path] + list(args)
    argv += ['-e', json.dumps(extra_vars)]
    with tempfile.TemporaryDirectory(prefix='sgfleet-lockout-') as tmp:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, cwd=tmp,
                            env=ansible.ansible_env())
    return ansible.AnsibleRun(argv, cp.returncode, cp.stdout, cp.stderr, {})


def summary(run):
    """host -> its line in the run's summary."""
    lines = {}
    for m in re.finditer(r'"(sghost\d+): ([^"]*)"', run.stdout):
        lines[m.group(1)] = m.group(2)
    return lines


def retry_command(run):
    """The command the run printed to retry the hosts it could not confirm (its last failure message)."""
    for line in run.stdout.splitlines():
        if line.startswith('fatal: ') and 'Retry only those hosts with: ' in line:
            msg = json.loads(line.split(' => ', 1)[1])['msg']
            return msg.split('Retry only those hosts with: ', 1)[1]
    raise AssertionError('no retry command printed:\n' + run.stdout[-3000:])


def key_login(host, user):
    return host.sshd.run_as(user.on(host), 'echo got-in', check=False)


def pw_login(host, user, state_dir):
    return password_login(host.sshd, user.name, PASSWORD, state_dir, 'echo got-in')


def assert_in(host, user, state_dir, password=True):
    cp = key_login(host, user)
    assert cp.returncode == 0 and 'got-in' in cp.stdout, (host.name, cp.stderr)
    if password:
        cp = pw_login(host, user, state_dir)
        assert cp.returncode == 0 and 'got-in' in cp.stdout, (host.name, cp.stderr)


def assert_out(host, user, state_dir, password=True):
    cp = key_login(host, user)
    assert cp.returncode == 255 and 'got-in' not in cp.stdout, (host.name, cp.returncode, cp.stdout)
    if password:
        cp = pw_login(host, user, state_dir)
        assert cp.returncode == 255 and 'got-in' not in cp.stdout, (host.name, cp.returncode, cp.stdout)


def assert_mosh_refused(scope, user, host):
    session = scope.mosh(user, host, wait=False)
    wait_for(lambda: session.client_exit_status() is not None, 30, 'mosh to %s to give up' % host.name)
    assert session.client_exit_status() != 0
    assert user.on(host).processes() == [], host.name


def ops_connects(fleet):
    run = fleet.ansible('fleet', 'ansible.builtin.ping')
    return run.rc == 0 and all(run.ok(h.name) for h in fleet.hosts)


def test_revoke_closes_every_door_on_every_host_and_restore_opens_them_exactly(
        logins, clean_door, sg_scope, user_factory, mosh_session_factory, bystander_factory):
    fleet = logins
    user = user_factory()
    dated = fleet.hosts[1]
    keys, expiry = {}, {}
    for host in fleet.hosts:
        host.run(['chpasswd'], input='%s:%s\n' % (user.name, PASSWORD))
        if host is dated:
            host.run(['chage', '-E', '2032-02-29', user.name])
        path = host.path(os.path.join(user.on(host).home, '.ssh', 'authorized_keys'))
        keys[host.name] = (path, file_state(path))
        expiry[host.name] = shadow_field(host, user.name)
        assert_in(host, user, sg_scope.dir)
    assert expiry[dated.name] != '' and all(expiry[h.name] == '' for h in fleet.hosts if h is not dated)
    sessions = {}
    for host in fleet.hosts:
        session = mosh_session_factory(user, host)
        start_escapees(session, ('nohup', 'setsid'))
        sessions[host.name] = session
    bystanders = [bystander_factory(h) for h in fleet.hosts]

    run = run_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'revoke_grace_period': 2})

    assert run.rc == 0, run.describe()
    lines = summary(run)
    for host in fleet.hosts:
        assert lines[host.name].startswith('revoked - 1 session(s)'), (host.name, lines)
        assert sessions[host.name].wait_client_exit() == 0
        assert user.on(host).processes() == [], host.name
        assert deny_list(host) == [user.name]
        assert shadow_field(host, user.name) == '1'
        assert not os.path.exists(keys[host.name][0])
        assert_out(host, user, sg_scope.dir)
        assert_mosh_refused(sg_scope, user, host)
    for b in bystanders:
        assert b.user.host.sshd.run_as(b.user, 'true', check=False).returncode == 0
        b.assert_untouched()
    assert ops_connects(fleet)

    again = run_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'revoke_grace_period': 2})
    assert again.rc == 0, again.describe()
    for host in fleet.hosts:
        assert re.search(r'%s\s+: ok=\d+\s+changed=0 ' % host.name, again.stdout), again.stdout[-3000:]
        assert summary(again)[host.name].startswith('nothing to do'), summary(again)

    restored = run_playbook(fleet, 'restore', {'restore_users': [user.name]})
    assert restored.rc == 0, restored.describe()
    for host in fleet.hosts:
        path, before = keys[host.name]
        assert file_state(path) == before, host.name
        assert shadow_field(host, user.name) == expiry[host.name], host.name
        assert deny_list(host) == []
        assert_in(host, user, sg_scope.dir)
    for b in bystanders:
        b.assert_untouched()


def test_check_diff_changes_nothing_and_shows_the_door(logins, clean_door, sg_scope, user_factory):
    fleet = logins
    user = user_factory()
    watched = {}
    for host in fleet.hosts:
        watched[host.name] = [file_state(host.path(p)) for p in (
            '/etc/shadow', '/etc/pam.d/sshd', os.path.join(user.on(host).home, '.ssh', 'authorized_keys'))] + [
            sorted(os.listdir(host.path('/etc/ssh/sshd_config.d'))), deny_list(host)]

    run = run_playbook(fleet, 'revoke', {'revoke_users': [user.name]}, args=['--check', '--diff'])

    assert run.rc == 0, run.describe()
    for host in fleet.hosts:
        assert summary(run)[host.name].startswith('would revoke'), summary(run)
        assert [file_state(host.path(p)) for p in (
            '/etc/shadow', '/etc/pam.d/sshd', os.path.join(user.on(host).home, '.ssh', 'authorized_keys'))] + [
            sorted(os.listdir(host.path('/etc/ssh/sshd_config.d'))), deny_list(host)] == watched[host.name]
        assert_in(host, user, sg_scope.dir, password=False)
    assert run.stdout.count('+%s' % user.name) >= len(fleet.hosts)          # the deny entry
    assert run.stdout.count('+1970-01-02') == len(fleet.hosts)              # the expiry
    assert run.stdout.count('+(moved to the quarantine)') == len(fleet.hosts)  # the key file


def test_a_host_with_a_broken_sshd_config_fails_and_the_rest_still_happens(
        logins, clean_door, sg_scope, user_factory, mosh_session_factory, bystander_factory):
    fleet = logins
    broken_host = fleet.hosts[0]
    user = user_factory()
    session = mosh_session_factory(user, broken_host)
    bystander = bystander_factory(broken_host)
    sshd_pid = broken_host.sshd.refresh()
    bad = broken_host.path('/etc/ssh/sshd_config.d/50-broken.conf')
    with open(bad, 'w') as f:
        f.write('NoSuchOption yes\n')
    try:
        run = run_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'revoke_grace_period': 2})
        assert run.rc != 0, run.describe()
        lines = summary(run)
        assert lines[broken_host.name].startswith('failed - lockout: the sshd configuration does not validate')
        assert 'NoSuchOption' in lines[broken_host.name]
        for host in fleet.hosts[1:]:
            assert lines[host.name].startswith('revoked'), lines
        assert 'Retry only those hosts with: ansible-playbook sessionguard.mosh.revoke' in run.stdout
        assert "--limit %s" % broken_host.name in run.stdout
        # sshd kept its old configuration and still serves; the sessions ended; expiry and keys handled.
        assert broken_host.sshd.refresh() == sshd_pid and broken_host.sshd.listening()
        assert bystander.user.host.sshd.run_as(bystander.user, 'true', check=False).returncode == 0
        assert session.wait_client_exit() == 0 and user.on(broken_host).processes() == []
        assert shadow_field(broken_host, user.name) == '1'
        assert not os.path.exists(broken_host.path(os.path.join(user.on(broken_host).home, '.ssh', 'authorized_keys')))
        assert not os.path.exists(broken_host.path('/etc/ssh/sshd_config.d/sessionguard-lockout.conf'))
        assert_out(broken_host, user, sg_scope.dir, password=False)
        bystander.assert_untouched()
    finally:
        os.unlink(bad)
    assert run_playbook(fleet, 'restore', {'restore_users': [user.name]}).rc == 0


def test_protected_users_fail_before_anything_changes_on_any_host(logins, clean_door, sg_scope, user_factory):
    fleet = logins
    user = user_factory()
    before = dict((h.name, (file_state(h.path('/etc/shadow')), file_state(h.path('/etc/pam.d/sshd')), deny_list(h)))
                  for h in fleet.hosts)

    as_ops = run_playbook(fleet, 'revoke', {'revoke_users': [user.name, 'ops']})
    listed = run_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'sessionguard_protected_users': [user.name]})

    for run, name in ((as_ops, 'ops'), (listed, user.name)):
        assert run.rc != 0, run.describe()
        assert 'Refusing: %s is protected' % name in run.stdout, run.stdout[-3000:]
        assert 'Close the door' not in run.stdout.split('Refusing:')[1]
    for h in fleet.hosts:
        assert (file_state(h.path('/etc/shadow')), file_state(h.path('/etc/pam.d/sshd')), deny_list(h)) == before[h.name]
        assert_in(h, user, sg_scope.dir, password=False)
    assert ops_connects(fleet)


def test_ten_lockouts_at_once_on_one_host_leave_ten_entries(logins, clean_door, sg_scope, user_factory):
    fleet = logins
    host = fleet.hosts[-1]
    users = [user_factory(hosts=[host]) for _i in range(10)]
    runs = {}
    go = threading.Barrier(10)

    def one(u):
        go.wait()
        runs[u.name] = fleet.playbook([{
            'name': 'Lock out', 'hosts': host.name, 'gather_facts': False, 'become': True,
            'tasks': [{'name': 'Lock out', 'sessionguard.mosh.lockout': {'users': [u.name]}}]}])

    threads = [threading.Thread(target=one, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert sorted(runs) == sorted(u.name for u in users)
    assert all(r.rc == 0 for r in runs.values()), [r.describe() for r in runs.values() if r.rc]
    assert sorted(deny_list(host)) == sorted(u.name for u in users)
    with open(host.path('/etc/ssh/sshd_config.d/sessionguard-lockout.conf')) as f:
        assert sorted(line.split()[1] for line in f if line.startswith('DenyUsers')) == sorted(u.name for u in users)
    assert_out(host, users[0], sg_scope.dir, password=False)
    assert run_playbook(fleet, 'restore', {'restore_users': [u.name for u in users], 'sessionguard_hosts': host.name}).rc == 0
    assert deny_list(host) == []


def test_persistence_is_set_aside_and_restored_on_the_fleet(logins, clean_door, sg_scope, user_factory):
    fleet = logins
    host = fleet.hosts[0]
    user = user_factory(hosts=[host])
    host.run(['crontab', '-u', user.name, '-'], input='7 4 * * * echo sessionguard-fleet\n')
    host.sshd.run_as(user.on(host), 'echo echo sessionguard-fleet | at now + 3 hours 2>&1')
    open(host.path('/var/lib/systemd/linger/' + user.name), 'w').close()
    spool = [host.path('/var/spool/cron/crontabs/' + user.name), host.path('/var/lib/systemd/linger/' + user.name)]
    atjobs = host.path('/var/spool/cron/atjobs')
    spool += [os.path.join(atjobs, j) for j in os.listdir(atjobs)
              if not j.startswith('.') and os.lstat(os.path.join(atjobs, j)).st_uid == user.uid]
    before = dict((p, file_state(p)) for p in spool)
    assert len(before) == 3

    reported = run_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'sessionguard_hosts': host.name})

    assert reported.rc == 0, reported.describe()
    assert ('ways back left in place (revoke_persistence=disable sets them aside): %s: crontab, 1 at job(s), linger flag'
            % user.name) in summary(reported)[host.name]
    assert dict((p, file_state(p)) for p in spool) == before

    run = run_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'revoke_persistence': 'disable',
                                         'sessionguard_hosts': host.name})

    assert run.rc == 0, run.describe()
    assert 'ways back set aside: %s: crontab, 1 at job(s), linger flag' % user.name in summary(run)[host.name]
    assert host.run(['crontab', '-l', '-u', user.name], check=False).stdout == ''
    assert user.name not in host.run(['atq']).stdout
    assert not os.path.exists(spool[1])
    assert run_playbook(fleet, 'restore', {'restore_users': [user.name], 'sessionguard_hosts': host.name}).rc == 0
    assert dict((p, file_state(p)) for p in spool) == before
    assert user.name in host.run(['atq']).stdout


def test_a_user_with_command_keys_only_is_refused_and_let_back(logins, clean_door, sg_scope, user_factory):
    fleet = logins
    user = user_factory(authorize=False)
    for host in fleet.hosts:
        with open(host.path(os.path.join(AKC_DIR, user.name)), 'w') as f:
            f.write(user.pubkey + '\n')
        assert_in(host, user, sg_scope.dir, password=False)
    try:
        run = run_playbook(fleet, 'revoke', {'revoke_users': [user.name]})
        assert run.rc == 0, run.describe()
        for host in fleet.hosts:
            assert_out(host, user, sg_scope.dir, password=False)
        assert run_playbook(fleet, 'restore', {'restore_users': [user.name]}).rc == 0
        for host in fleet.hosts:
            assert_in(host, user, sg_scope.dir, password=False)
    finally:
        for host in fleet.hosts:
            os.unlink(host.path(os.path.join(AKC_DIR, user.name)))


def test_an_unreachable_host_is_reported_and_the_printed_command_finishes_the_job(
        logins, clean_door, sg_scope, user_factory, mosh_session_factory):
    fleet = logins
    user = user_factory()
    down = fleet.hosts[-1]
    session = mosh_session_factory(user, down)
    down.sshd.stop()
    # Earlier runs' multiplexed connections (ControlPersist) would outlive the listener: end them too.
    conns = [p for p in procfs.iter_procs(down.proc_root) if p.comm.startswith('sshd')]
    procfs.kill_procs(conns)
    procfs.wait_gone(conns, proc_root=down.proc_root)
    try:
        run = run_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'revoke_grace_period': 2})
        assert run.rc != 0, run.describe()
        lines = summary(run)
        assert lines[down.name].startswith('unreachable'), lines
        assert all(lines[h.name].startswith('revoked') for h in fleet.hosts if h is not down), lines
        command = retry_command(run)
        assert '--limit %s ' % down.name in command
        assert session.client_running() and deny_list(down) == []
    finally:
        down.sshd.start()
    # Run exactly as printed, with ansible-playbook on PATH as on an operator's machine.
    env = ansible.ansible_env()
    env['PATH'] = os.path.dirname(ansible.venv_bin('ansible-playbook')) + os.pathsep + env.get('PATH', '')
    with tempfile.TemporaryDirectory() as tmp:
        cp = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=900, check=False, cwd=tmp,
                            env=env)
    assert cp.returncode == 0, cp.stdout[-3000:]
    assert '"%s: revoked' % down.name in cp.stdout
    assert all('"%s: ' % h.name not in cp.stdout for h in fleet.hosts if h is not down)
    assert session.wait_client_exit() == 0 and user.on(down).processes() == []
    assert deny_list(down) == [user.name]
    assert_out(down, user, sg_scope.dir, password=False)
    assert run_playbook(fleet, 'restore', {'restore_users': [user.name]}).rc == 0


@pytest.fixture(scope='module')
def directory(logins):
    """slapd on loopback with its own configuration, and every host's NSS pointed at it through its own nslcd."""
    state = tempfile.mkdtemp(prefix='sgldap-', dir=logins.state_dir)
    server = ldap.Directory(state).start()
    clients = []
    try:
        for host in logins.hosts:
            clients.append(ldap.DirectoryClient(host, server).start())
        yield server
    finally:
        problems = []
        for client in clients:
            try:
                client.stop()
            except Exception as exc:  # stop the others all the same
                problems.append(str(exc))
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
        assert not problems, problems


def directory_user(fleet, server, scope_dir, key_in_home):
    """A user that exists only in the directory, with its home on every host; its key in the home, or handed out by
    the AuthorizedKeysCommand only. Returns {host name: TestUser}."""
    name = 'sgd' + ''.join(random.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _i in range(6))
    uid = random.randint(45000, 49999)
    home = '/home/' + name
    server.add_user(name, uid, home)
    key = os.path.join(scope_dir, name)
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', key], check=True)
    with open(key + '.pub') as f:
        pub = f.read()
    users = {}
    for host in fleet.hosts:
        host.run(['install', '-d', '-o', str(uid), '-g', str(uid), '-m', '0755', home])
        if key_in_home:
            host.run(['install', '-d', '-o', str(uid), '-g', str(uid), '-m', '0700', home + '/.ssh'])
            host.run(['install', '-o', str(uid), '-g', str(uid), '-m', '0600', '/dev/stdin', home + '/.ssh/authorized_keys'],
                     input=pub)
        else:
            with open(host.path(os.path.join(AKC_DIR, name)), 'w') as f:
                f.write(pub)
        users[host.name] = TestUser(host, name, uid, uid, home, key, '/bin/bash')
    return users


def test_directory_users_are_locked_out_on_every_host_and_let_back(logins, directory, sg_scope, bystander_factory):
    fleet = logins
    keyed = directory_user(fleet, directory, sg_scope.dir, key_in_home=True)
    commanded = directory_user(fleet, directory, sg_scope.dir, key_in_home=False)
    names = [keyed[fleet.hosts[0].name].name, commanded[fleet.hosts[0].name].name]
    bystanders = [bystander_factory(h) for h in fleet.hosts]
    keys = {}
    try:
        for host in fleet.hosts:
            for users in (keyed, commanded):
                u = users[host.name]
                assert host.run(['getent', 'passwd', u.name]).stdout.split(':')[2] == str(u.uid)
                with open(host.path('/etc/passwd')) as f:
                    assert u.name not in f.read()
                assert shadow_field(host, u.name) is None
                cp = host.sshd.run_as(u, 'echo got-in', check=False)
                assert cp.returncode == 0 and 'got-in' in cp.stdout, (host.name, u.name, cp.stderr)
            path = host.path(keyed[host.name].home + '/.ssh/authorized_keys')
            keys[host.name] = (path, file_state(path))

        run = run_playbook(fleet, 'revoke', {'revoke_users': names, 'revoke_grace_period': 2})

        assert run.rc == 0, run.describe()
        for host in fleet.hosts:
            assert summary(run)[host.name].startswith('revoked'), summary(run)
            assert sorted(deny_list(host)) == sorted(names)
            assert not os.path.exists(keys[host.name][0])
            for users in (keyed, commanded):
                cp = host.sshd.run_as(users[host.name], 'echo got-in', check=False)
                assert cp.returncode == 255 and 'got-in' not in cp.stdout, (host.name, cp.stdout)
        for b in bystanders:
            assert b.user.host.sshd.run_as(b.user, 'true', check=False).returncode == 0
            b.assert_untouched()

        restored = run_playbook(fleet, 'restore', {'restore_users': names})

        assert restored.rc == 0, restored.describe()
        for host in fleet.hosts:
            assert file_state(keys[host.name][0]) == keys[host.name][1]
            assert deny_list(host) == []
            for users in (keyed, commanded):
                cp = host.sshd.run_as(users[host.name], 'echo got-in', check=False)
                assert cp.returncode == 0 and 'got-in' in cp.stdout, (host.name, cp.stderr)
    finally:
        for host in fleet.hosts:
            if any(n in deny_list(host) for n in names):
                run_playbook(fleet, 'restore', {'restore_users': names, 'restore_force': True,
                                                'sessionguard_hosts': host.name})
            for users in (keyed, commanded):
                u = users[host.name]
                host.kill_all_as(u.uid, u.gid)
                host.run(['rm', '-rf', '--one-file-system', u.home])
                if os.path.exists(host.path(os.path.join(AKC_DIR, u.name))):
                    os.unlink(host.path(os.path.join(AKC_DIR, u.name)))


def junit_cases(directory):
    """Each host's tasks in the order they started, from ansible-core's junit callback: (host, play, task, file:line,
    the host's result; None when it failed or was skipped)."""
    [name] = os.listdir(directory)
    cases = []
    for case in ElementTree.parse(os.path.join(directory, name)).getroot().iter('testcase'):
        host, rest = re.match(r'\[([^\]]+)\] (.*)$', case.get('name')).groups()
        play, task = rest.split(': ', 1)
        task = task.replace('sessionguard.mosh.revoke : ', '', 1)   # a role's task is named after the role too
        if host == 'include':   # an include_role, recorded once for the hosts it was included for
            continue
        out = case.find('system-out')
        cases.append((host, play, task, case.get('classname'), json.loads(out.text) if out is not None else None))
    return cases


def test_the_revoke_playbook_kills_in_one_module_run_per_host_before_it_verifies_any(
        logins, clean_door, sg_scope, user_factory, mosh_session_factory, bystander_factory):
    """Before any host is verified, each host gets exactly one module run, which closes the door and then kills."""
    fleet = logins
    user = user_factory()
    sessions = dict((h.name, mosh_session_factory(user, h)) for h in fleet.hosts)
    bystanders = [bystander_factory(h) for h in fleet.hosts]
    junit = os.path.join(sg_scope.dir, 'junit')
    os.makedirs(junit)

    run = fleet.playbook([{'ansible.builtin.import_playbook': 'sessionguard.mosh.revoke'}],
                         extra_vars={'revoke_users': [user.name], 'revoke_reason': 'one round trip',
                                     'revoke_grace_period': 2},
                         env={'ANSIBLE_CALLBACKS_ENABLED': 'ansible.builtin.tree,ansible.builtin.junit',
                              'JUNIT_OUTPUT_DIR': junit, 'JUNIT_HIDE_TASK_ARGUMENTS': 'true'})

    assert run.rc == 0, run.describe()
    cases = junit_cases(junit)
    plays = []
    for _h, play, _t, _c, _r in cases:
        if play not in plays:
            plays.append(play)
    assert plays == ['Refuse a bad revocation before anything changes on any host',
                     "Close the door and end the users' sessions", 'Verify, judge and record each host',
                     'Summarize the revocation across hosts'], plays
    # The first play is the playbook's include of the role's refuse.yml and what that file holds (assertions and the
    # run id, on the controller alone).
    first = [(task, where) for _h, play, task, where, _r in cases if play == plays[0]]
    assert all('/playbooks/revoke.yml:' in where or '/roles/revoke/tasks/refuse.yml:' in where
               for _t, where in first), first
    # Then one task, one module run per host: the door and the kill together.
    kill = [c for c in cases if c[1] == plays[1]]
    assert sorted(c[0] for c in kill) == sorted(h.name for h in fleet.hosts), kill
    for host, _p, task, where, result in kill:
        assert task == 'Close the door on the users and end their sessions' and '/roles/revoke/tasks/end.yml:' in where
        assert 'deny list' in result['lockout']['users'][0]['closed'], (host, result['lockout'])
        assert result['totals']['sessions'] == 1 and result['survivors'] == [], (host, result['totals'])
    # Only after every host's kill: the audit, the verdict and the record, in a play of their own.
    first_audit = min(i for i, c in enumerate(cases) if c[2] == 'Audit what is left of the users')
    assert max(i for i, c in enumerate(cases) if c[1] == plays[1]) < first_audit
    lines = summary(run)
    for host in fleet.hosts:
        assert lines[host.name].startswith('revoked - 1 session(s)') and '; door: ' in lines[host.name], lines
        assert sessions[host.name].wait_client_exit() == 0, host.name
        assert user.on(host).processes() == [], host.name
        assert deny_list(host) == [user.name], host.name
        assert_out(host, user, sg_scope.dir, password=False)
    for b in bystanders:
        assert b.user.host.sshd.run_as(b.user, 'true', check=False).returncode == 0
        b.assert_untouched()
    assert run_playbook(fleet, 'restore', {'restore_users': [user.name]}).rc == 0

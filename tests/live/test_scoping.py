"""Exact scoping on live processes: what a revocation of one user may end, and what it must leave alone.

Another user's process is ended only with kill_other_uids and only when the revoked user's login started it;
a process running under the user's UID is ended only when it is the user's (not a root-started container's);
logind ties compare the whole cgroup path; a mosh-server is found by what it does, whatever its image; and a
name the directory spells its own way (``Bob.Smith@corp.example``) is revoked by that name.

Each test names the scope it uses. Every destructive test checks that the bystander is untouched and looks at
the system's real state (procfs) as well as the module's result.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from sgtest import MOSH_EXITING, procfs
from sgtest.escapees import start_escapees
from sgtest.waiting import wait_for
from test_revoke_sessions import revoke_watching, tty_of

CGROUP2 = '/sys/fs/cgroup/unified' if os.path.ismount('/sys/fs/cgroup/unified') else '/sys/fs/cgroup'
LDSO = '/lib64/ld-linux-x86-64.so.2'
SSSD_NAME = 'Bob.Smith@corp.example'


# --------------------------------------------------------------------------- helpers

def ended(result):
    """{pid: signal} of every process the result says it ended."""
    return dict((p['pid'], p['signal']) for s in result['sessions'] for p in s['processes'])


def reported(result):
    """PIDs listed in other_uid_processes."""
    return set(p['pid'] for p in result['other_uid_processes'])


def assert_ok(result, target):
    assert not result.get('failed'), result.get('msg', result)
    assert result['process_reader'] == target.reader
    assert result['survivors'] == [], result['survivors']


def stopped_keys():
    """(pid, starttime) of every process on the host in a job-control or tracing stop (state T or t)."""
    out = set()
    for p in procfs.iter_procs():
        if p.state in ('T', 't'):
            out.add(p.key())
    return out


def assert_nothing_newly_stopped(before, timeout=5.0):
    """No process is left stopped that was not stopped before the run (a transient stop elsewhere may pass)."""
    def _none_new():
        return not (stopped_keys() - before)

    wait_for(_none_new, timeout, lambda: 'processes left stopped by the run: ' + '; '.join(
        str(procfs.read_proc(pid)) for pid, _start in sorted(stopped_keys() - before)))


def wait_proc(uid, pred, what, timeout=20.0):
    """The one live process of ``uid`` matching ``pred`` (waits for it to appear)."""
    def _find():
        found = [p for p in procfs.procs_of_uid(uid) if pred(p)]
        return found[0] if len(found) == 1 else None

    return wait_for(_find, timeout, lambda: '%s among %s' % (what, [str(p) for p in procfs.procs_of_uid(uid)]))


def keys(procs):
    return [p.key() for p in procs]


def is_sleep(seconds):
    return lambda p: p.comm == 'sleep' and p.cmdline == ('sleep', str(seconds))


def loose_process(user, argv):
    """Start ``argv`` as ``user`` from this test (no loginuid, no audit session, a session of its own)."""
    return subprocess.Popen(['setpriv', '--reuid=%d' % user.uid, '--regid=%d' % user.gid, '--clear-groups'] + argv,
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def reap(*popens):
    for p in popens:
        if p.poll() is None:
            p.kill()
        p.wait(15)


@pytest.fixture
def sudoers():
    """``allow(who, as_user)`` installs an /etc/sudoers.d drop-in: ``who`` may run anything as ``as_user``."""
    made = []

    def allow(who, as_user):
        path = '/etc/sudoers.d/sgtest-%s' % uuid.uuid4().hex[:12]   # no dot: sudo skips such names
        made.append(path)
        tmp = path + '.tmp'   # skipped by sudo while it is written
        with open(tmp, 'w') as fh:
            fh.write('%s ALL=(%s) NOPASSWD: ALL\n' % (who.name, as_user.name))
        os.chmod(tmp, 0o440)
        check = subprocess.run(['visudo', '-cf', tmp], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        os.rename(tmp, path)
        return path

    yield allow
    for path in made:
        for p in (path, path + '.tmp'):
            if os.path.exists(p):
                os.unlink(p)


# --------------------------------------------------------------------------- 1. sudo -u bob from alice's session

@pytest.mark.parametrize('kill_other_uids', [False, True], ids=['keep-other-uids', 'kill-other-uids'])
@pytest.mark.parametrize('how', ['interactive', 'bash-c'])
def test_scope_all_ends_a_sudo_job_run_as_the_user_and_leaves_the_users_session_that_started_it(
        default_target, user_factory, mosh_session_factory, sudoers, bystander, how, kill_other_uids):
    """Scope all, revoking bob: alice ran ``sudo -u bob sleep 900`` from her mosh session. Bob's sleep ends;
    alice's server, shell, client and sudo are hers, not bob's, whatever kill_other_uids says."""
    alice, bob = user_factory(prefix='sga'), user_factory(prefix='sgo')
    sudoers(alice, bob)
    session = mosh_session_factory(alice)
    if how == 'interactive':
        session.send_line('sudo -u %s sleep 900 &' % bob.name)
    else:
        session.send_line("bash -c 'sudo -u %s sleep 900' &" % bob.name)
    session.sync()
    sleep = wait_proc(bob.uid, is_sleep(900), "bob's sleep")
    assert sleep.loginuid == alice.uid and sleep.sessionid == session.sessionid, sleep
    alice_before = alice.settled_processes()
    stopped_before = stopped_keys()

    result = default_target.run('revoke_sessions', {'users': [bob.name], 'scope': 'all', 'grace_period': 2,
                                                    'kill_other_uids': kill_other_uids})

    assert_ok(result, default_target)
    assert result['changed'] is True
    assert sleep.pid in ended(result)
    assert result['foreign_processes'] == []
    # Nothing of alice's (nor the root sudo she started) was ended or even named as bob's.
    assert not set(ended(result)) & set(p.pid for p in alice_before)
    assert result['other_uid_processes'] == []
    assert all(s['uid'] == bob.uid for s in result['sessions'])
    wait_for(lambda: not sleep.alive(), 10, 'bob\'s sleep to end')
    assert bob.processes() == []
    for proc in (session.server, session.shell, session.client):
        assert proc.alive(), 'alice lost %s' % proc
    assert session.client_running()
    session.sync()     # her shell still answers: not stopped, not hung up
    assert alice.processes()
    assert_nothing_newly_stopped(stopped_before)
    bystander.assert_untouched()


# --------------------------------------------------------------------------- 2. logind ties: the whole cgroup path

@pytest.fixture
def cgroups():
    """``make(rel)`` creates a cgroup v2 group under a private top-level group; all removed at teardown
    (any process still in one is moved back to the root group first)."""
    tops = []

    def make(top_tag, rel):
        top = os.path.join(CGROUP2, 'sgtest-%s-%s' % (top_tag, uuid.uuid4().hex[:8]))
        tops.append(top)
        path = os.path.join(top, rel)
        os.makedirs(path)
        return path

    def move(path, pid):
        with open(os.path.join(path, 'cgroup.procs'), 'w') as fh:
            fh.write('%d\n' % pid)

    make.move = move
    yield make
    errors = []
    for top in tops:
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count('/')):
            try:
                with open(os.path.join(dirpath, 'cgroup.procs')) as fh:
                    pids = [int(x) for x in fh.read().split()]
            except OSError:
                pids = []
            for pid in pids:
                try:
                    move(CGROUP2, pid)
                except OSError:
                    pass
            try:
                os.rmdir(dirpath)
            except OSError as exc:
                errors.append('%s: %s' % (dirpath, exc))
    assert not errors, errors


def cgroup_of(pid):
    with open('/proc/%d/cgroup' % pid) as fh:
        return [line[3:] for line in fh.read().splitlines() if line.startswith('0::')][0]


def test_scope_mosh_logind_tie_is_the_whole_cgroup_path_not_the_session_number(
        default_target, user_factory, mosh_session_factory, cgroups, bystander):
    """Scope mosh, revoking bob: his server and a loose process of his sit in
    .../sgtest-a/user-UIDB.slice/session-3.scope; alice's process sits in .../sgtest-b/user-UIDA.slice/session-3.scope.
    The loose process goes with bob's server (same group); alice's is neither ended nor named."""
    alice, bob = user_factory(prefix='sga'), user_factory(prefix='sgo')
    session = mosh_session_factory(bob)
    mine = loose_process(bob, ['sleep', '901'])
    hers = loose_process(alice, ['sleep', '902'])
    try:
        mine_p = wait_proc(bob.uid, is_sleep(901), "bob's loose sleep")
        hers_p = wait_proc(alice.uid, is_sleep(902), "alice's sleep")
        bobs = cgroups('a', 'user-%d.slice/session-3.scope' % bob.uid)
        hers_group = cgroups('b', 'user-%d.slice/session-3.scope' % alice.uid)
        for pid in (session.server_pid, mine.pid):
            cgroups.move(bobs, pid)
        cgroups.move(hers_group, hers.pid)
        assert cgroup_of(session.server_pid) == cgroup_of(mine.pid) != cgroup_of(hers.pid)
        assert cgroup_of(hers.pid).endswith('/session-3.scope')

        result = default_target.run('revoke_sessions', {'users': [bob.name], 'scope': 'mosh', 'grace_period': 2})

        assert_ok(result, default_target)
        [mosh] = [s for s in result['sessions'] if s['kind'] == 'mosh']
        assert mosh['leader_pid'] == session.server_pid
        assert mine.pid in ended(result), 'the logind tie (same group) did not hold: %s' % result['sessions']
        assert hers.pid not in ended(result) and hers.pid not in reported(result)
        assert mine.wait(10) in (-15, -9)
        assert session.wait_client_exit() == 0
        assert hers_p.alive() and hers.poll() is None
        assert not mine_p.alive() and bob.processes() == []
        assert keys(alice.processes()) == [hers_p.key()]
        bystander.assert_untouched()
    finally:
        reap(mine, hers)


# --------------------------------------------------------------------------- 3. PID namespaces

def test_scope_all_leaves_a_root_started_container_process_of_the_uid_and_ends_rootless_ones(
        default_target, user_factory, mosh_session_factory, bystander):
    """Scope all, revoking bob. A process of bob's UID in a PID namespace root started (no loginuid, the
    initial user namespace) is not bob's: reported in foreign_processes and left running. A rootless
    user+PID namespace that bob started from his mosh session, and one started under his UID outside any
    login (owned by his user namespace only), are his and end."""
    with open('/proc/self/loginuid') as fh:
        assert int(fh.read()) == procfs.AUDIT_UNSET, 'the test process must have no loginuid'
    bob = user_factory(prefix='sgo')
    session = mosh_session_factory(bob)
    escapee = start_escapees(session, ('nohup',))['nohup']
    session.send_line('unshare --user --map-root-user --pid --fork sleep 903 &')
    session.sync()
    rootless = wait_proc(bob.uid, is_sleep(903), 'the rootless container sleep')
    loose_rootless = loose_process(bob, ['unshare', '--user', '--map-root-user', '--pid', '--fork', 'sleep', '904'])
    container = subprocess.Popen(['unshare', '--pid', '--fork', '--mount-proc', 'setpriv', '--reuid=%d' % bob.uid,
                                  '--regid=%d' % bob.gid, '--clear-groups', 'sleep', '900'],
                                 start_new_session=True, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        loose = wait_proc(bob.uid, is_sleep(904), 'the rootless sleep started outside a login')
        foreign = wait_proc(bob.uid, is_sleep(900), "the root-started container's sleep")
        host_ns = os.readlink('/proc/self/ns/pid')   # this test runs in the host's PID namespace
        for p in (rootless, loose, foreign):
            assert os.readlink('/proc/%d/ns/pid' % p.pid) != host_ns, p
        assert foreign.loginuid == procfs.AUDIT_UNSET and rootless.loginuid == bob.uid, (foreign, rootless)
        assert os.readlink('/proc/%d/ns/user' % foreign.pid) == os.readlink('/proc/self/ns/user')
        assert os.readlink('/proc/%d/ns/user' % loose.pid) != os.readlink('/proc/self/ns/user')

        result = default_target.run('revoke_sessions', {'users': [bob.name], 'scope': 'all', 'grace_period': 2})

        assert_ok(result, default_target)
        assert [p['pid'] for p in result['foreign_processes']] == [foreign.pid]
        assert foreign.pid not in ended(result)
        gone = [session.server, session.shell, escapee.proc, rootless, loose]
        assert set(p.pid for p in gone) <= set(ended(result))
        assert session.wait_client_exit() == 0
        wait_for(lambda: not any(p.alive() for p in gone), 10,
                 lambda: 'bob\'s own processes to end: %s' % [str(p) for p in gone if p.alive()])
        assert foreign.alive() and container.poll() is None
        assert keys(bob.processes()) == [foreign.key()]
        bystander.assert_untouched()
    finally:
        reap(container, loose_rootless)


# --------------------------------------------------------------------------- 3b. a container's devpts

# A rootless container's terminals: a user and mount namespace with a /dev of its own and a devpts instance of its
# own (every devpts mount is a new instance: its own numbering from pts/0). Its /dev/ptmx is a link to that
# instance's ptmx bound under another name (dev/t/term), so the server's pty master shows in /proc/PID/fd by a
# path that does not say ptmx. The first HELD ptys are taken by a holder process so that the mosh-server's
# shell gets pts/HELD in there. The holder closes its stdio so the ssh that started the server does not wait.
CONTAINER_SERVER = r"""#!/bin/sh
held=$1; shift
exec unshare --user --map-root-user --mount sh -c '
set -e
host=$HOME/.cache/x/hostdev
mkdir -p $host
mount --rbind /dev $host
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero random urandom tty; do touch /dev/$n; mount --bind $host/$n /dev/$n; done
umount -l $host
mkdir /dev/pts /dev/t
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
touch /dev/t/term
mount --bind /dev/pts/ptmx /dev/t/term
ln -s t/term /dev/ptmx
exec python3 -c "
import os, signal, sys
held = int(sys.argv[1])
masters = [os.open(\"/dev/ptmx\", os.O_RDWR | os.O_NOCTTY) for _ in range(held)]
if os.fork() == 0:
    null = os.open(\"/dev/null\", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.setsid()
    signal.pause()
for m in masters:
    os.close(m)
os.execvp(\"mosh-server\", [\"mosh-server\"] + sys.argv[2:])
" "$@"' sh "$held" "$@"
"""


def test_scope_mosh_a_containers_pts_number_is_not_the_hosts(
        default_target, user_factory, mosh_session_factory, bystander):
    """Scope mosh with kill_other_uids, revoking bob. Bob's mosh session runs in a rootless container whose
    devpts gives his shell pts/N, its master opened through a name that is not ptmx; alice's mosh shell on the
    host holds the host's pts/N. Bob's server is found all the same, his session ends and hears the notice;
    alice's shell is neither tied to his nor written to, and her session runs on."""
    alice, bob = user_factory(prefix='sga'), user_factory(prefix='sgo')
    hers = mosh_session_factory(alice)
    number = int(tty_of(hers.shell).split('/')[1])
    launcher = os.path.join(os.path.dirname(bob.key_path), 'ctr')
    with open(launcher, 'w') as fh:
        fh.write(CONTAINER_SERVER)
    bob.install_file(launcher, '.cache/x/ctr', 0o755)
    os.unlink(launcher)
    his = mosh_session_factory(bob, server='~/.cache/x/ctr %d' % number)
    assert tty_of(his.shell) == tty_of(hers.shell)
    assert '/dev/t/term' in procfs.fd_targets(his.server_pid).values()
    # The same device number (136:N is pts/N in every instance), on two devpts file systems.
    his_pts, her_pts = (os.stat('/proc/%d/root/dev/pts/%d' % (s.shell.pid, number)) for s in (his, hers))
    assert his_pts.st_rdev == her_pts.st_rdev and his_pts.st_dev != her_pts.st_dev, 'not two devpts instances'
    hers_before = alice.settled_processes()
    notice = 'sessionguard-notice-%d: access revoked' % bob.uid

    result, seen = revoke_watching(default_target, {'users': [bob.name], 'scope': 'mosh', 'grace_period': 3,
                                                    'kill_other_uids': True, 'notice': notice}, his, notice)

    assert_ok(result, default_target)
    [mosh] = [s for s in result['sessions'] if s['kind'] == 'mosh']
    assert mosh['leader_pid'] == his.server_pid and mosh['tty'] == 'pts/%d' % number
    assert result['notice_sent_to'] == ['pts/%d' % number]
    assert not set(ended(result)) & set(p.pid for p in hers_before)
    assert result['other_uid_processes'] == []
    assert seen, 'the notice never reached bob\'s client'
    assert his.wait_client_exit() == 0
    assert bob.processes() == []
    for proc in (hers.server, hers.shell, hers.client):
        assert proc.alive(), 'alice lost %s' % proc
    assert keys(alice.processes()) == keys(hers_before)
    hers.sync()
    assert notice not in hers.screen(history=True)
    bystander.assert_untouched()


# --------------------------------------------------------------------------- 4. sudo -u svc from bob's SSH login

def test_scope_mosh_reports_a_job_bobs_ssh_login_ran_as_another_user_and_kill_other_uids_ends_it(
        default_target, user_factory, mosh_session_factory, ssh_session_factory, sudoers, bystander):
    """Scope mosh, revoking bob. From an SSH login (not his mosh session) bob ran ``sudo -u svc nohup sleep``.
    Without kill_other_uids it is reported (loginuid bob) and left; with it, it is ended (kind loginuid). His
    SSH login is outside scope mosh either way and stays."""
    bob, svc = user_factory(prefix='sgo'), user_factory(prefix='sgs')
    sudoers(bob, svc)
    session = mosh_session_factory(bob)
    login = ssh_session_factory(bob)
    login.sync()
    login.send_line('sudo -u %s nohup sleep 905 >/dev/null 2>&1 &' % svc.name)
    login.sync()
    job = wait_proc(svc.uid, is_sleep(905), "svc's sleep")
    assert job.loginuid == bob.uid and job.sessionid == login.sessionid != session.sessionid, job
    login_procs = [login.shell, login.sshd_session]

    kept = default_target.run('revoke_sessions', {'users': [bob.name], 'scope': 'mosh', 'grace_period': 2})

    assert_ok(kept, default_target)
    assert job.pid in reported(kept) and job.pid not in ended(kept)
    [entry] = [p for p in kept['other_uid_processes'] if p['pid'] == job.pid]
    assert entry['uid'] == svc.uid and entry['user'] == svc.name
    assert all(p['uid'] != bob.uid for p in kept['other_uid_processes'])
    assert [s['kind'] for s in kept['sessions']] == ['mosh']
    assert session.wait_client_exit() == 0
    assert job.alive() and keys(svc.processes()) == [job.key()]
    assert login.running() and all(p.alive() for p in login_procs)
    bystander.assert_untouched()

    killed = default_target.run('revoke_sessions', {'users': [bob.name], 'scope': 'mosh', 'grace_period': 2,
                                                    'kill_other_uids': True})

    assert_ok(killed, default_target)
    [by_login] = [s for s in killed['sessions'] if s['kind'] == 'loginuid']
    assert by_login['uid'] == bob.uid and job.pid in [p['pid'] for p in by_login['processes']]
    assert [s['kind'] for s in killed['sessions']] == ['loginuid']
    wait_for(lambda: not job.alive(), 10, "svc's sleep to end")
    assert svc.processes() == []
    # The login itself is not in scope mosh: bob's shell and sshd are untouched and his shell answers.
    assert login.running() and all(p.alive() for p in login_procs)
    login.sync()
    bystander.assert_untouched()


# --------------------------------------------------------------------------- 5. servers known by behaviour

def patched_server(user):
    """A copy of mosh-server in the home with its ``MOSH CONNECT`` bytes replaced, and the ``--server`` value
    that runs it: a launcher pipes the startup line through sed so the mosh wrapper still finds it."""
    with open('/usr/bin/mosh-server', 'rb') as fh:
        data = fh.read()
    assert data.count(b'MOSH CONNECT') == 1
    patched = os.path.join(user.home, '.cache/x/msrv')
    tmp = os.path.join(os.path.dirname(user.key_path), 'msrv')
    with open(tmp, 'wb') as fh:
        fh.write(data.replace(b'MOSH CONNECT', b'XOSH CONNECT'))
    user.install_file(tmp, '.cache/x/msrv', 0o755)
    os.unlink(tmp)
    launcher = os.path.join(os.path.dirname(user.key_path), 'launch')
    with open(launcher, 'w') as fh:
        fh.write('#!/bin/sh\n"%s" "$@" | sed -u "s/XOSH CONNECT/MOSH CONNECT/"\n' % patched)
    user.install_file(launcher, '.cache/x/launch', 0o755)
    os.unlink(launcher)
    with open(patched, 'rb') as fh:
        assert b'MOSH CONNECT' not in fh.read()
    return '~/.cache/x/launch'


def test_default_scope_finds_servers_by_behaviour_ldso_and_patched_copy(
        target, user_factory, mosh_session_factory, bystander):
    """Default scope (mosh): a mosh-server run through ld.so (its exe is ld.so) and a copy without mosh's
    signature bytes are both found by what they hold (UDP socket + pty master), ended, and their clients
    hear mosh's clean shutdown."""
    bob = user_factory(prefix='sgo')
    via_ldso = mosh_session_factory(bob, server='%s /usr/bin/mosh-server' % LDSO)
    patched = mosh_session_factory(bob, server=patched_server(bob))
    assert os.path.realpath(procfs.exe(via_ldso.server_pid)) == os.path.realpath(LDSO)
    assert procfs.exe(patched.server_pid) == os.path.join(bob.home, '.cache/x/msrv')
    servers = {via_ldso.server_pid: via_ldso, patched.server_pid: patched}

    result = target.run('revoke_sessions', {'users': [bob.name], 'grace_period': 3})

    assert_ok(result, target)
    mosh = dict((s['leader_pid'], s) for s in result['sessions'] if s['kind'] == 'mosh')
    assert set(mosh) == set(servers), result['sessions']
    for pid, s in mosh.items():
        assert s['identified_by'] == 'behaviour', s
        assert ended(result)[pid] == 'SIGTERM'
    for session in servers.values():
        assert session.wait_client_exit() == 0
        assert MOSH_EXITING in session.screen(history=True)
        assert not session.server.alive() and not session.shell.alive()
    assert bob.processes() == []
    bystander.assert_untouched()


# --------------------------------------------------------------------------- 6. a directory-style name

@pytest.fixture
def sssd_user(sg_scope):
    """``Bob.Smith@corp.example`` in the local /etc/passwd (``useradd --badname``), made by the scope so its
    teardown kills, deletes and verifies it like any test user."""
    return sg_scope.user(SSSD_NAME)


def test_default_scope_revokes_a_directory_style_name(target, sssd_user, mosh_session_factory, bystander):
    """Default scope (mosh), users: [Bob.Smith@corp.example]: the name is taken as the account database
    spells it, and its mosh session and escapee end."""
    session = mosh_session_factory(sssd_user)
    escapee = start_escapees(session, ('nohup',))['nohup']

    result = target.run('revoke_sessions', {'users': [SSSD_NAME], 'grace_period': 3})

    assert_ok(result, target)
    assert result['absent_users'] == []
    [mosh] = [s for s in result['sessions'] if s['kind'] == 'mosh']
    assert mosh['user'] == SSSD_NAME and mosh['uid'] == sssd_user.uid and mosh['leader_pid'] == session.server_pid
    assert escapee.pid in ended(result)
    assert session.wait_client_exit() == 0
    assert MOSH_EXITING in session.screen(history=True)
    assert sssd_user.processes() == []
    bystander.assert_untouched()

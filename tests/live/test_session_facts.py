"""session_facts on live sessions: attach state, client address, UDP port, SSH logins, orphans."""

from __future__ import annotations

import signal
import subprocess
import time

from sgtest import procfs, utmp
from sgtest.ansible import TARGETS, Target
from sgtest.escapees import start_escapees
from test_revoke_sessions import tty_of

# mosh-server rewrites its utmp record to "mosh [PID]" after this much client silence.
MOSH_DETACH_SECONDS = 30


def sessions_of(result, uid, kind='mosh'):
    assert not result.get('failed'), result.get('msg', result)
    return [s for s in result['ansible_facts']['sessionguard_sessions'] if s['uid'] == uid and s['kind'] == kind]


def test_attached_session_shows_client_ip_udp_port_and_origin(target, user_factory, mosh_session_factory):
    user = user_factory()
    session = mosh_session_factory(user)
    server = session.server
    [port] = procfs.udp_ports(server.pid)

    [entry] = sessions_of(target.run('session_facts', {'users': [user.name]}), user.uid)

    assert entry['server_pid'] == server.pid and entry['user'] == user.name
    assert entry['state'] == 'attached' and entry['state_source'] == 'utmp'
    assert entry['client_ip'] == '127.0.0.1' and entry['client_ip_source'] == 'utmp'
    assert 'hint' in entry['client_ip_note']
    assert entry['udp_port'] == port
    assert entry['tty'] == tty_of(session.shell)
    assert entry['ssh_connection']['client_ip'] == '127.0.0.1'
    assert entry['audit_session'] == server.sessionid
    assert entry['suspicious'] is False
    assert entry['started'].endswith('Z') and entry['age_seconds'] >= 0
    assert entry['process_count'] >= 1 and any(p['pid'] == session.shell.pid for p in entry['processes'])


def test_session_turns_detached_after_its_client_is_killed(user_factory, mosh_session_factory):
    """One session serves every target: mosh's 30 s of silence are waited out once."""
    user = user_factory()
    session = mosh_session_factory(user)
    targets = [Target(name) for name in sorted(TARGETS)]
    for t in targets:
        [entry] = sessions_of(t.run('session_facts', {'users': [user.name]}), user.uid)
        assert entry['state'] == 'attached', t

    session.kill_client()
    killed_at = time.monotonic()
    time.sleep(max(0, MOSH_DETACH_SECONDS + 3 - (time.monotonic() - killed_at)))

    for t in targets:
        [entry] = sessions_of(t.run('session_facts', {'users': [user.name]}), user.uid)
        assert entry['state'] == 'detached', (t, entry)
        assert entry['detached_seconds'] >= MOSH_DETACH_SECONDS
        # The last known client is still reported, from the record history.
        assert entry['client_ip'] == '127.0.0.1'
    assert session.server.alive()


def test_ssh_logins_and_orphans(target, user_factory, mosh_session_factory, ssh_session_factory):
    user = user_factory()
    login = ssh_session_factory(user)
    session = mosh_session_factory(user)
    escapees = start_escapees(session, ('nohup',))
    orphan = escapees['nohup'].proc
    # The laptop is gone and the server was killed by hand: the nohup job is tied to no live login.
    procfs.kill_procs([session.server], signal.SIGKILL)
    procfs.wait_gone([session.server, session.shell])

    facts = target.run('session_facts', {'users': [user.name], 'include_ssh': True})

    assert sessions_of(facts, user.uid, 'mosh') == []
    [ssh] = sessions_of(facts, user.uid, 'ssh')
    assert ssh['client_ip'] == '127.0.0.1' and ssh['client_port'] > 0
    assert ssh['tty'] == tty_of(login.shell)
    assert any(p['pid'] == login.shell.pid for p in ssh['processes'])
    [orphans] = [o for o in facts['ansible_facts']['sessionguard_orphans'] if o['uid'] == user.uid]
    assert [p['pid'] for p in orphans['processes']] == [orphan.pid]


# The setgid helper every utmp-writing terminal program uses (mosh-server too). Any user may call it: it writes
# a USER_PROCESS record for the pty whose master is its stdin, with ut_pid = its caller and ut_user = the
# caller's name, and any host text the caller likes.
UTEMPTER = '/usr/lib/x86_64-linux-gnu/utempter/utempter'

FORGER = r'''
import os, pty, subprocess, sys
masters = []
for host in sys.argv[1:]:
    master, _slave = pty.openpty()
    masters.append(master)
    subprocess.run([%r, 'add', host], stdin=master, check=True)
print('written', flush=True)
sys.stdin.readline()
for master in masters:
    subprocess.run([%r, 'del'], stdin=master, check=False)
''' % (UTEMPTER, UTEMPTER)


def test_a_forged_utmp_record_naming_another_users_server_is_not_believed(target, user_factory, mosh_session_factory):
    """bob writes utmp records through utempter whose host text names alice's server PID: one claims a client at
    198.51.100.7, one claims the session detached. Alice's session keeps its own record's client and state;
    bob's records name his own process (ut_pid) and his name (ut_user), not hers."""
    alice, bob = user_factory(prefix='sga'), user_factory(prefix='sgo')
    session = mosh_session_factory(alice)
    pid = session.server_pid
    forged = ['198.51.100.7 via mosh [%d]' % pid, 'mosh [%d]' % pid]
    forger = subprocess.Popen(['setpriv', '--reuid=%d' % bob.uid, '--regid=%d' % bob.gid, '--init-groups',
                               '/usr/bin/python3', '-c', FORGER] + forged,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert forger.stdout.readline().strip() == 'written'
        written = [r for r in utmp.records(alice.host.utmp_path, user=bob.name) if r.mosh_pid == pid]
        assert sorted(r.host for r in written) == sorted(forged) and all(r.pid == forger.pid for r in written), \
            written

        [entry] = sessions_of(target.run('session_facts', {'users': [alice.name]}), alice.uid)

        assert entry['server_pid'] == pid
        assert entry['state'] == 'attached' and entry['state_source'] == 'utmp', entry
        assert entry['client_ip'] == '127.0.0.1' and entry['client_ip_source'] == 'utmp', entry
        assert '198.51.100.7' not in repr(entry)
    finally:
        forger.communicate('\n', timeout=15)
        utmp.retire_records(lambda r: r.user == bob.name, alice.host.utmp_path)
    assert forger.returncode == 0

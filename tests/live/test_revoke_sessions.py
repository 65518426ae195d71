"""revoke_sessions on live processes: real users, sshd logins, mosh-servers with attached mosh-clients."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from sgtest import procfs
from sgtest.escapees import ALL_KINDS, start_escapees
from sgtest.mosh import spoofed_server


def tty_of(proc):
    """pts name of a harness Proc (tty_nr major 136-143 are the Unix98 ptys)."""
    major, minor = (proc.tty_nr >> 8) & 0xfff, (proc.tty_nr & 0xff) | ((proc.tty_nr >> 12) & 0xfff00)
    assert 136 <= major <= 143, proc
    return 'pts/%d' % ((major - 136) * 256 + minor)


def ended(result):
    """{pid: signal} of every process the result says it ended (or would end)."""
    return dict((p['pid'], p['signal']) for s in result['sessions'] for p in s['processes'])


def assert_ok(result, target):
    assert not result.get('failed'), result.get('msg', result)
    assert result['process_reader'] == target.reader
    assert result['survivors'] == []


def test_default_scope_ends_the_session_and_every_escapee(target, user_factory, mosh_session_factory, bystander):
    user = user_factory()
    session = mosh_session_factory(user)
    escapees = start_escapees(session, ALL_KINDS)
    server, shell = session.server, session.shell

    result = target.run('revoke_sessions', {'users': [user.name], 'grace_period': 3})

    assert_ok(result, target)
    assert result['changed'] is True
    # The client got mosh's clean shutdown.
    assert session.wait_client_exit() == 0
    assert '[mosh is exiting.]' in session.screen(history=True)
    # Nothing of the session remains: server, shell, every escapee, the user's own tmux server.
    for proc in [server, shell] + [e.proc for e in escapees.values()]:
        assert not proc.alive(), 'survived: %s' % proc
    assert user.processes() == []
    # The result names them, with the signal that ended each.
    signals = ended(result)
    assert signals[server.pid] == 'SIGTERM'
    assert signals[escapees['trap'].pid] == 'SIGKILL'
    assert set(e.pid for e in escapees.values()) <= set(signals)
    mosh = [s for s in result['sessions'] if s['kind'] == 'mosh']
    assert [s['leader_pid'] for s in mosh] == [server.pid]
    assert mosh[0]['user'] == user.name and mosh[0]['uid'] == user.uid and mosh[0]['tty'] == tty_of(shell)
    bystander.assert_untouched()

    again = target.run('revoke_sessions', {'users': [user.name]})
    assert_ok(again, target)
    assert again['changed'] is False and again['sessions'] == []
    bystander.assert_untouched()


def test_renamed_copied_deleted_server_is_found_flagged_and_killed(target, user_factory, mosh_session_factory, bystander):
    user = user_factory()
    session = mosh_session_factory(user, server=spoofed_server(user))
    server = session.server
    assert server.comm != 'mosh-server' and 'mosh-server' not in ' '.join(server.cmdline)
    os.unlink(procfs.exe(server.pid))

    facts = target.run('session_facts', {'users': [user.name]})
    assert not facts.get('failed'), facts
    [entry] = facts['ansible_facts']['sessionguard_sessions']
    assert entry['server_pid'] == server.pid
    assert entry['renamed'] and entry['copied'] and entry['exe_deleted'] and entry['suspicious']

    result = target.run('revoke_sessions', {'users': [user.name]})
    assert_ok(result, target)
    assert server.pid in ended(result)
    assert session.wait_client_exit() == 0
    assert not server.alive() and user.processes() == []
    bystander.assert_untouched()


def test_check_mode_signals_nothing_and_predicts_the_real_run(target, user_factory, mosh_session_factory, bystander):
    user = user_factory()
    session = mosh_session_factory(user)
    start_escapees(session, ('nohup', 'setsid', 'doublefork'))
    before = user.settled_processes()

    preview = target.run('revoke_sessions', {'users': [user.name]}, check=True)

    assert_ok(preview, target)
    assert preview['changed'] is True
    assert all(signal is None for signal in ended(preview).values())
    assert all(p.alive() for p in before), 'check mode touched a process'
    assert session.client_running()

    real = target.run('revoke_sessions', {'users': [user.name]})
    assert_ok(real, target)
    assert set(ended(real)) == set(ended(preview)) == set(p.pid for p in before)
    assert session.wait_client_exit() == 0
    assert user.processes() == []

    again = target.run('revoke_sessions', {'users': [user.name]})
    assert again['changed'] is False
    bystander.assert_untouched()


def test_scope_all_leaves_no_process_of_the_user(target, user_factory, mosh_session_factory,
                                                 ssh_session_factory, bystander):
    user = user_factory()
    session = mosh_session_factory(user)
    start_escapees(session, ('nohup', 'tmux'))
    login = ssh_session_factory(user)
    # A process tied to no login at all (started outside any session, like a cron job).
    loose = subprocess.Popen(['setpriv', '--reuid=%d' % user.uid, '--regid=%d' % user.gid, '--clear-groups',
                              'sleep', '100000'], start_new_session=True)
    assert procfs.alive(loose.pid)

    result = target.run('revoke_sessions', {'users': [user.name], 'scope': 'all', 'grace_period': 1})

    assert_ok(result, target)
    assert loose.wait(10) in (-15, -9)
    assert user.processes() == []
    assert session.wait_client_exit() == 0
    assert login.wait_exit() is not None
    assert loose.pid in ended(result)
    assert set(s['kind'] for s in result['sessions']) == {'mosh', 'ssh', 'other'}
    bystander.assert_untouched()


def test_scope_interactive_ends_a_live_ssh_login(target, user_factory, mosh_session_factory, ssh_session_factory,
                                                 bystander):
    user = user_factory()
    login = ssh_session_factory(user)
    login_procs = login.processes()
    session = mosh_session_factory(user)

    # The default scope leaves SSH logins alone...
    mosh_only = target.run('revoke_sessions', {'users': [user.name]})
    assert_ok(mosh_only, target)
    assert session.wait_client_exit() == 0
    assert login.running() and all(p.alive() for p in login_procs)

    # ...interactive ends them.
    result = target.run('revoke_sessions', {'users': [user.name], 'scope': 'interactive'})
    assert_ok(result, target)
    assert result['changed'] is True
    [ssh] = [s for s in result['sessions'] if s['kind'] == 'ssh']
    assert ssh['client_address'] == '127.0.0.1' and ssh['user'] == user.name
    assert login.wait_exit() is not None
    assert not any(p.alive() for p in login_procs)
    assert user.processes() == []
    bystander.assert_untouched()


@pytest.fixture(scope='module')
def untouchable(module_user_factory, module_mosh_session_factory):
    """One mosh session that every bad-input case aims at and none may touch (one session, not one per case:
    a case that wrongly signals it fails itself and every later case)."""
    user = module_user_factory()
    return user, module_mosh_session_factory(user)


@pytest.mark.parametrize('args, needle', [
    ({'users': ['root']}, "'root'"),
    ({'users': ['daemon']}, "'daemon'"),
    ({'users': [1]}, '1'),
    ({'users': []}, 'empty list'),
    ({'users': ['bad name;rm -rf']}, "'bad name;rm -rf'"),
    ({'users': ['USER'], 'grace_period': -1}, '-1'),
    ({'users': ['USER'], 'scope': 'everything'}, 'everything'),
    ({'users': ['\u00b2']}, "'\u00b2'"),
    ({'users': ['\u0661\u0660\u0660\u0661']}, "'\u0661\u0660\u0660\u0661'"),
    ({'users': [True]}, 'True'),
    ({'users': ['USER'], 'grace_period': 'nan'}, 'nan'),
    ({'users': ['USER'], 'grace_period': 'inf'}, 'inf'),
    ({'users': ['root', 'USER'], 'scope': 'all', 'allow_system_users': True}, "'root'"),
], ids=['root', 'system-name', 'system-uid', 'empty', 'malformed', 'negative-grace', 'unknown-scope',
        'superscript-digit', 'arabic-digits', 'boolean', 'nan-grace', 'inf-grace', 'root-scope-all'])
def test_bad_input_is_refused_before_anything_is_signalled(target, untouchable, args, needle):
    user, session = untouchable
    before = user.processes()
    args = dict(args, users=[user.name if u == 'USER' else u for u in args['users']])

    result = target.run('revoke_sessions', args)

    assert result.get('failed') is True
    assert needle in result['msg']
    assert 'sessions' not in result
    assert all(p.alive() for p in before)
    assert session.client_running()
    assert set(p.key() for p in user.processes()) == set(p.key() for p in before)


def test_a_uid_whose_account_is_gone_is_still_revoked(target, user_factory, mosh_session_factory, bystander):
    user = user_factory()
    session = mosh_session_factory(user)
    start_escapees(session, ('nohup',))
    user.drop_account()

    result = target.run('revoke_sessions', {'users': [user.uid]})

    assert_ok(result, target)
    assert result['absent_users'] == []
    assert session.wait_client_exit() == 0
    assert procfs.pids_of_uid(user.uid) == []
    bystander.assert_untouched()


def test_absent_user_is_reported_not_an_error(default_target):
    result = default_target.run('revoke_sessions', {'users': ['sg-nobody-here']})
    assert not result.get('failed'), result
    assert result['absent_users'] == ['sg-nobody-here'] and result['changed'] is False


def revoke_watching(target, args, session, text):
    """Run revoke_sessions while watching ``session``'s client screen for ``text``: the mosh client's screen is
    gone once it exits, so a notice can only be seen while the revocation runs. Returns (result, seen)."""
    seen, outcome = [], {}

    def run():
        outcome['result'] = target.run('revoke_sessions', args)

    worker = threading.Thread(target=run)
    worker.start()
    while worker.is_alive() and not seen:
        if text in session.screen():
            seen.append(True)
        time.sleep(0.05)
    worker.join()
    return outcome['result'], bool(seen)


def test_notice_reaches_the_mosh_client_before_the_session_ends(default_target, user_factory,
                                                                mosh_session_factory, bystander):
    user = user_factory()
    session = mosh_session_factory(user)
    notice = 'sessionguard-notice-%d: access revoked' % user.uid

    result, seen = revoke_watching(default_target, {'users': [user.name], 'notice': notice + '\x1b[2J'}, session,
                                   notice)

    assert seen, 'the notice never appeared on the mosh client; screen:\n' + session.screen(history=True)
    assert not result['failed'] and result['notice_sent_to'] == [tty_of(session.shell)]
    assert session.wait_client_exit() == 0
    bystander.assert_untouched()
    assert notice not in bystander.session.screen(history=True)

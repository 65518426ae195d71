"""End to end: the collection driven by ansible-playbook over SSH with become, against the fleet.

Every host is a namespaced sshd host; mosh clients run on the machine itself, in tmux.
"""

from __future__ import annotations

import pytest

from sgtest import TestUser, procfs
from sgtest.escapees import start_escapees

pytestmark = pytest.mark.fleet

ESCAPEES = ('nohup', 'setsid', 'doublefork', 'tmux', 'trap')


def module_play(module, args, hosts='fleet', check=False):
    return [{
        'name': 'Run %s' % module,
        'hosts': hosts,
        'gather_facts': False,
        'tasks': [{'name': 'Module under test', 'sessionguard.mosh.%s' % module: args, 'check_mode': check}],
    }]


def run_module(fleet, module, args, **kw):
    return fleet.playbook(module_play(module, args, **kw))


def run_collection_playbook(fleet, name, extra_vars):
    """``ansible-playbook sessionguard.mosh.NAME`` against the fleet inventory."""
    return fleet.playbook([{'ansible.builtin.import_playbook': 'sessionguard.mosh.%s' % name}], extra_vars=extra_vars)


def ended_pids(result):
    return set(p['pid'] for s in result['sessions'] for p in s['processes'])


def open_sessions(fleet, user, mosh_factory, escapees=ESCAPEES):
    """A mosh session with escapees for ``user`` on every host it exists on: host name -> (session, procs)."""
    out = {}
    for host in user.hosts:
        session = mosh_factory(user, host)
        esc = start_escapees(session, escapees) if escapees else {}
        procs = [session.server, session.shell] + [e.proc for e in esc.values()]
        user.on(host).settled_processes()
        out[host.name] = (session, procs)
    return out


def bystanders_everywhere(fleet, factory):
    return [factory(h) for h in fleet.hosts]


def test_one_run_revokes_a_user_on_every_host(fleet, user_factory, mosh_session_factory,
                                              bystander_factory):
    user = user_factory()
    sessions = open_sessions(fleet, user, mosh_session_factory)
    bystanders = bystanders_everywhere(fleet, bystander_factory)

    run = run_collection_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'revoke_grace_period': 2})

    assert run.rc == 0, run.describe()
    for name, (session, procs) in sessions.items():
        host = fleet.host(name)
        assert session.wait_client_exit() == 0, name
        survivors = [p for p in procs if p.alive(host.proc_root)]
        assert survivors == [], '%s: %s' % (name, [str(p) for p in survivors])
        assert user.on(host).processes() == [], name
    for b in bystanders:
        b.assert_untouched()
    # Every host is named in the fleet summary.
    for host in fleet.hosts:
        assert '%s: revoked - 1 session(s)' % host.name in run.stdout, run.stdout


def test_every_host_kind_gives_the_same_result(fleet, user_factory, mosh_session_factory,
                                               bystander_factory):
    """Debian Python with and without psutil, pyenv 3.9 and 3.13: same sessions, same processes ended."""
    user = user_factory()
    sessions = open_sessions(fleet, user, mosh_session_factory, escapees=('nohup', 'setsid'))
    bystanders = bystanders_everywhere(fleet, bystander_factory)

    run = run_module(fleet, 'revoke_sessions', {'users': [user.name]})

    assert run.rc == 0, run.describe()
    readers = {}
    for host in fleet.hosts:
        result = run.hosts[host.name]
        session, procs = sessions[host.name]
        assert not result.get('failed'), (host.name, result)
        assert ended_pids(result) == set(p.pid for p in procs), host.name
        [entry] = result['sessions']
        assert (entry['kind'], entry['user'], entry['leader_pid']) == ('mosh', user.name, session.server.pid)
        assert entry['client_address'] == '127.0.0.1'
        assert session.wait_client_exit() == 0
        readers[host.name] = result['process_reader']
        expected = 'psutil' if host.profile.psutil else 'procfs'
        assert result['process_reader'] == expected, host.name
    assert set(readers.values()) == {'psutil', 'procfs'}
    for b in bystanders:
        b.assert_untouched()


def test_user_absent_on_some_hosts(fleet, user_factory, mosh_session_factory, bystander_factory):
    present = fleet.hosts[:2]
    user = user_factory(hosts=present)
    sessions = open_sessions(fleet, user, mosh_session_factory, escapees=('nohup',))
    bystanders = bystanders_everywhere(fleet, bystander_factory)

    run = run_module(fleet, 'revoke_sessions', {'users': [user.name]})

    assert run.rc == 0, run.describe()
    for host in fleet.hosts:
        result = run.hosts[host.name]
        assert not result.get('failed'), (host.name, result)
        if host in present:
            assert result['changed'] is True and result['absent_users'] == []
            assert sessions[host.name][0].wait_client_exit() == 0
            assert user.on(host).processes() == []
        else:
            assert result['changed'] is False and result['absent_users'] == [user.name]
            assert result['sessions'] == []
    for b in bystanders:
        b.assert_untouched()


def test_a_host_with_sshd_down_is_unreachable_and_the_rest_are_revoked(fleet, user_factory, mosh_session_factory):
    user = user_factory()
    sessions = open_sessions(fleet, user, mosh_session_factory, escapees=('nohup',))
    down = fleet.hosts[-1]
    down.sshd.cut_off()
    try:
        run = run_collection_playbook(fleet, 'revoke', {'revoke_users': [user.name]})
        assert run.rc != 0, run.describe()
        assert '%s: unreachable' % down.name in run.stdout, run.stdout
        for host in fleet.hosts:
            session, procs = sessions[host.name]
            if host is down:
                # Nothing reached it: its session is still there, as the failed run says.
                assert session.client_running() and all(p.alive(host.proc_root) for p in procs)
            else:
                assert session.wait_client_exit() == 0, host.name
                assert user.on(host).processes() == [], host.name
    finally:
        down.sshd.start()


def test_revoking_the_user_ansible_connects_as(fleet, sg_scope, bystander_factory):
    """ops has a mosh session with escapees on a host; revoking ops (scope all) ends everything of ops
    there except the connection that runs the task, says so, and the run completes."""
    host = fleet.hosts[0]
    uid, gid = fleet_ops_ids(host)
    ops = TestUser(host, 'ops', uid, gid, '/home/ops', fleet.ops_key_path, '/bin/bash')
    session = sg_scope.mosh(ops)  # ops is not the scope's: its account stays
    escapees = start_escapees(session, ('nohup', 'setsid'))
    procs = [session.server, session.shell] + [e.proc for e in escapees.values()]
    bystander = bystander_factory(host)

    play = module_play('revoke_sessions', {'users': ['ops'], 'scope': 'all', 'grace_period': 1}, hosts=host.name)
    play[0]['tasks'].append({'name': 'The connection still works', 'ansible.builtin.command': 'id -un',
                             'changed_when': False})
    play[0]['tasks'][0]['register'] = 'revoked'
    play[0]['tasks'].append({'name': 'Return the revocation', 'ansible.builtin.debug': {'var': 'revoked'}})
    run = fleet.playbook(play)

    assert run.rc == 0, run.describe()
    result = run.hosts[host.name]['revoked']
    assert result['spared'], result
    assert any('sshd' in s['cmdline'] for s in result['spared'])
    assert 'left running' in run.stdout or result['spared']
    assert session.wait_client_exit() == 0
    assert not any(p.alive(host.proc_root) for p in procs)
    spared = set(s['pid'] for s in result['spared'])
    leftover = [p for p in procfs.procs_of_uid(uid, proc_root=host.proc_root) if p.pid not in spared]
    # What is left of ops is only the (now finished) Ansible connection's own chain, if anything.
    assert all(p.comm.startswith('sshd') or p.comm in ('sh', 'bash', 'sudo', 'python3') for p in leftover), leftover
    bystander.assert_untouched()


def fleet_ops_ids(host):
    entry = host.run(['getent', 'passwd', 'ops']).stdout.split(':')
    return int(entry[2]), int(entry[3])


def test_session_facts_across_the_fleet(fleet, user_factory, mosh_session_factory, ssh_session_factory):
    user = user_factory()
    sessions = open_sessions(fleet, user, mosh_session_factory, escapees=())
    logins = dict((h.name, ssh_session_factory(user, h)) for h in fleet.hosts[:2])

    run = run_module(fleet, 'session_facts', {'users': [user.name], 'include_ssh': True})

    assert run.rc == 0, run.describe()
    for host in fleet.hosts:
        facts = run.hosts[host.name]['ansible_facts']['sessionguard_sessions']
        [mosh] = [s for s in facts if s['kind'] == 'mosh']
        session = sessions[host.name][0]
        assert mosh['server_pid'] == session.server.pid, host.name
        assert mosh['user'] == user.name and mosh['state'] == 'attached'
        assert mosh['client_ip'] == '127.0.0.1'
        assert mosh['ssh_connection']['server_ip'] == host.address
        assert mosh['bind_address'] == host.address
        assert mosh['udp_port'] in procfs.udp_ports(session.server.pid, host.proc_root)
        ssh = [s for s in facts if s['kind'] == 'ssh']
        if host.name in logins:
            assert len(ssh) == 1 and ssh[0]['client_ip'] == '127.0.0.1'
            assert any(p['pid'] == logins[host.name].shell.pid for p in ssh[0]['processes'])
        else:
            assert ssh == []


def test_a_user_deleted_everywhere_is_not_confirmed_until_revoked_by_uid(fleet, user_factory,
                                                                         mosh_session_factory, bystander_factory):
    """``userdel -f bob`` with his session running: revoking "bob" finds no one, and the run must not look
    like success. The summary names the nameless UID; a rerun with that UID revokes it (scope: mosh)."""
    host = fleet.hosts[0]
    user = user_factory(hosts=[host])
    session, procs = open_sessions(fleet, user, mosh_session_factory, escapees=('nohup',))[host.name]
    bystander = bystander_factory(host)
    user.on(host).drop_account()

    by_name = run_collection_playbook(fleet, 'revoke', {'revoke_users': [user.name], 'sessionguard_hosts': host.name})

    assert by_name.rc != 0, by_name.describe()
    assert 'not found: %s' % user.name in by_name.stdout and str(user.uid) in by_name.stdout, by_name.describe()
    assert 'NOT CONFIRMED - %s was not found on any host' % user.name in by_name.stdout, by_name.describe()
    assert all(p.alive() for p in procs) and session.client_running()

    by_uid = run_collection_playbook(fleet, 'revoke', {'revoke_users': [user.uid], 'sessionguard_hosts': host.name})

    assert by_uid.rc == 0, by_uid.describe()
    assert session.wait_client_exit() == 0
    assert not any(p.alive() for p in procs)
    assert procfs.pids_of_uid(user.uid, proc_root=host.proc_root) == []
    bystander.assert_untouched()

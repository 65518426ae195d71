# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Discovery and Plan on process topologies written as data: what each way of escaping a session leaves
behind, and the exact set of processes a revocation of the user would end, report or spare.

Tag convention: ``tied`` is what the plan must end, ``host`` (base_host) and ``elsewhere`` what it must not
touch, ``root`` what it must report (or end with kill_other_uids).
"""

from __future__ import annotations

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils._revoke import Plan
from ansible_collections.sessionguard.mosh.plugins.module_utils._sessions import Discovery
from ansible_collections.sessionguard.mosh.tests.unit.plugins.module_utils.fakeproc import Ptmx, base_host, scope

USER = 1000


def pids(procs):
    return set(p.pid for p in procs)


def plan_for(fp, scope_='mosh', kill_other_uids=False, exclude=()):
    fp.build()
    return Plan(fp.snapshot(), [USER], scope_, kill_other_uids, exclude, fp.judge())


def login(fp, audit=True, logind=True, pty=4):
    """The user's mosh login; ``audit``/``logind``: whether pam_loginuid/pam_systemd labelled it."""
    server, shell = fp.mosh_login(USER, session=None, pty=pty, tag='tied')
    for p in (server, shell):
        if audit:
            p.loginuid, p.sessionid = USER, 7
        if logind:
            p.cgroup = scope(USER, 7)
    return server, shell


def test_a_mosh_login_is_one_session_and_the_rest_of_the_host_is_untouched(fakeproc):
    base_host(fakeproc)
    server, shell = login(fakeproc)
    fakeproc.spawn(shell, 'vim', argv=['vim', 'notes'], tag='tied')
    # The same user's cron job is another login (its own audit session): not part of this one.
    cron = fakeproc.add(uid=USER, comm='backup', loginuid=USER, sessionid=9, cgroup='0::/system.slice/cron.service\n',
                        tag='elsewhere')
    fakeproc.spawn(cron, 'rsync', tag='elsewhere')

    plan = plan_for(fakeproc)
    assert pids(plan.procs) == fakeproc.pids('tied')
    (s,) = plan.sessions
    assert (s.kind, s.uid, s.leader.pid, s.child.pid, s.tty, s.pty_index) == ('mosh', USER, server.pid, shell.pid, 'pts/4', 4)
    assert (s.audit_session, s.logind_session) == (7, '7')
    assert s.pids[0] == server.pid
    assert plan.graceful() == {(server.pid, server.start)}
    assert plan.reported == [] and plan.spared == []

    everything = plan_for(fakeproc, 'all')
    assert pids(everything.procs) == fakeproc.pids('tied', 'elsewhere')
    assert [x.kind for x in everything.sessions] == ['mosh', 'other']
    assert pids(everything.sessions[1].members) == fakeproc.pids('elsewhere')


@pytest.mark.parametrize('audit, logind', [(True, True), (False, False)])
def test_nohup_job_stays_in_the_pty_session(fakeproc, audit, logind):
    base_host(fakeproc)
    _server, shell = login(fakeproc, audit, logind)
    # `(nohup job &)`: the subshell exited, so init adopted the job; it kept the session and terminal.
    job = fakeproc.spawn(shell, 'job', ppid=1, argv=['job', '--forever'], tag='tied')
    fakeproc.spawn(job, 'job-worker', tag='tied')
    plan = plan_for(fakeproc)
    assert pids(plan.procs) == fakeproc.pids('tied')


@pytest.mark.parametrize('audit, logind', [(True, False), (False, True), (True, True)])
def test_setsid_escapee_is_caught_by_its_audit_or_logind_session(fakeproc, audit, logind):
    base_host(fakeproc)
    _server, shell = login(fakeproc, audit, logind)
    # `setsid -f miner`: a session of its own, no terminal, parent init; only the login labels remain.
    miner = fakeproc.spawn(shell, 'miner', daemon=True, tag='tied')
    fakeproc.spawn(miner, 'miner-worker', tag='tied')
    plan = plan_for(fakeproc)
    assert pids(plan.procs) == fakeproc.pids('tied')


def test_unlabelled_escapee_is_only_found_by_scope_all(fakeproc):
    """Without pam_loginuid or pam_systemd nothing ties a setsid escapee to the login; scope all ends
    every process of the user regardless."""
    base_host(fakeproc)
    _server, shell = login(fakeproc, audit=False, logind=False)
    miner = fakeproc.spawn(shell, 'miner', daemon=True, tag='escaped')
    fakeproc.spawn(miner, 'miner-worker', tag='escaped')
    assert pids(plan_for(fakeproc).procs) == fakeproc.pids('tied')
    everything = plan_for(fakeproc, 'all')
    assert pids(everything.procs) == fakeproc.pids('tied', 'escaped')
    assert pids(everything.sessions[-1].members) == fakeproc.pids('escaped')


def test_double_forked_daemon_keeps_the_audit_session(fakeproc):
    base_host(fakeproc)
    _server, shell = login(fakeproc, audit=True, logind=False)
    # fork, setsid, fork: the middle process exited; the daemon is no session leader, its session is dead.
    middle = fakeproc.spawn(shell, 'daemon', setsid=True)
    daemon = fakeproc.spawn(middle, 'daemon', ppid=1, tag='tied')
    del fakeproc.specs[middle.pid]
    plan = plan_for(fakeproc)
    assert (daemon.ppid, daemon.sid) == (1, middle.pid)
    assert pids(plan.procs) == fakeproc.pids('tied')


def test_tmux_server_goes_with_the_session_it_was_started_from(fakeproc):
    base_host(fakeproc)
    server, shell = login(fakeproc)
    client = fakeproc.spawn(shell, 'tmux: client', argv=['tmux', 'new', '-s', 'work'], tag='tied')
    # A pty master and a socket, like a mosh-server, but a unix socket and another image.
    tmux = fakeproc.spawn(client, 'tmux: server', daemon=True, argv=['tmux', 'new', '-s', 'work'],
                          fds=[fakeproc.sock('unix'), Ptmx(5), Ptmx(6)], tag='tied')
    pane1 = fakeproc.spawn(tmux, 'bash', setsid=True, tty=5, argv=['-bash'], tag='tied')
    fakeproc.spawn(tmux, 'bash', setsid=True, tty=6, argv=['-bash'], tag='tied')
    fakeproc.spawn(pane1, 'top', tag='tied')
    # Another user's tmux next to it.
    _other_server, other_shell = fakeproc.mosh_login(1002, session=11, pty=9, tag='elsewhere')
    fakeproc.spawn(other_shell, 'tmux: server', daemon=True, fds=[fakeproc.sock('unix'), Ptmx(10)], tag='elsewhere')
    fakeproc.build()

    disc = Discovery(fakeproc.snapshot(), uids=[USER], judge=fakeproc.judge())
    assert [p.pid for p in disc.mosh_servers()] == [server.pid]
    plan = plan_for(fakeproc)
    assert len(plan.sessions) == 1
    assert pids(plan.procs) == fakeproc.pids('tied')


def test_sudo_is_reported_not_ended_unless_other_uids_may_be_killed(fakeproc):
    base_host(fakeproc)
    _server, shell = login(fakeproc)
    # sudo keeps the user's audit session (loginuid cannot change) and, with use_pty, opens a new pty.
    sudo = fakeproc.spawn(shell, 'sudo', uid=0, argv=['sudo', '-i'], fds=[Ptmx(8)], tag='root')
    monitor = fakeproc.spawn(sudo, 'sudo', setsid=True, tty=8, fds=[], tag='root')
    root_shell = fakeproc.spawn(monitor, 'bash', argv=['-bash'], tag='root')
    fakeproc.spawn(root_shell, 'rootd', daemon=True, tag='root')

    plan = plan_for(fakeproc)
    assert pids(plan.procs) == fakeproc.pids('tied')
    assert pids(plan.reported) == fakeproc.pids('root')
    assert all(p.uid == 0 for p in plan.reported)

    plan = plan_for(fakeproc, kill_other_uids=True)
    assert pids(plan.procs) == fakeproc.pids('tied', 'root')
    assert plan.reported == []


def test_ssh_login_is_ended_by_scope_interactive_with_its_privileged_sshd(fakeproc):
    listener = base_host(fakeproc)
    login(fakeproc)
    ssh = dict(loginuid=USER, sessionid=8, cgroup=scope(USER, 8))
    priv = fakeproc.spawn(listener, 'sshd-session', setsid=True, argv=['sshd-session: bob [priv]'], tag='ssh', **ssh)
    user = fakeproc.spawn(priv, 'sshd-session', uid=USER, argv=['sshd-session: bob@pts/1'], tag='ssh')
    fakeproc.spawn(user, 'bash', setsid=True, tty=1, argv=['-bash'], tag='ssh')

    assert pids(plan_for(fakeproc).procs) == fakeproc.pids('tied')
    plan = plan_for(fakeproc, 'interactive')
    assert [s.kind for s in plan.sessions] == ['mosh', 'ssh']
    assert pids(plan.procs) == fakeproc.pids('tied', 'ssh')
    assert (plan.sessions[1].leader.pid, plan.sessions[1].tty) == (priv.pid, 'pts/1')
    assert plan.reported == []


def test_the_tasks_own_chain_is_spared(fakeproc):
    base_host(fakeproc)
    _server, shell = login(fakeproc)
    python = fakeproc.spawn(shell, 'python3', argv=['python3', 'AnsiballZ_revoke_sessions.py'])
    plan = plan_for(fakeproc, exclude=[python.pid, shell.pid])
    assert pids(plan.spared) == {python.pid, shell.pid}
    assert pids(plan.procs) == fakeproc.pids('tied') - {shell.pid}


def test_zombies_are_never_in_the_kill_set(fakeproc):
    base_host(fakeproc)
    _server, shell = login(fakeproc)
    fakeproc.spawn(shell, 'defunct', state='Z', tag='zombie')
    # A zombie that held what a mosh-server holds is no session either.
    zserver, orphan = fakeproc.mosh_login(USER, session=12, pty=13, tag='zombie')
    zserver.state, orphan.tag = 'Z', 'orphan'
    for scope_, expected in (('mosh', {'tied'}), ('all', {'tied', 'orphan'})):
        plan = plan_for(fakeproc, scope_)
        assert pids(plan.procs) == fakeproc.pids(*expected)
        assert not any(p.zombie for p in plan.procs) and not any(p.zombie for p in plan.reported)
        assert not any(plan.tied(p) for p in plan.snap if p.zombie)


def test_a_server_is_found_by_what_it_holds_and_the_image_says_how(fakeproc):
    base_host(fakeproc)
    # A renamed copy of mosh-server is recognised by its signature; a process holding the same descriptors with
    # another image (ld.so, a patched copy) is a remote-terminal server all the same, recognised by behaviour.
    renamed, _renamed_shell = fakeproc.mosh_login(USER, session=7, pty=4, tag='tied')
    renamed.comm, renamed.argv = 'sshd', ['sshd: bob@notty']
    with open(fakeproc.mosh_exe, 'rb') as f:
        renamed.exe = fakeproc.binary('.cache-x', f.read())
    lookalike, _lookalike_shell = fakeproc.mosh_login(USER, session=8, pty=5, tag='lookalike')
    lookalike.exe = fakeproc.bash_exe
    fakeproc.build()
    disc = Discovery(fakeproc.snapshot(), uids=[USER], judge=fakeproc.judge())
    assert [p.pid for p in disc.mosh_servers()] == [renamed.pid, lookalike.pid]
    how = dict((s.leader.pid, s.identified_by) for s in disc.sessions())
    assert how == {renamed.pid: 'signature', lookalike.pid: 'behaviour'}


def test_a_pty_master_is_known_by_the_kernels_word_not_its_path(fakeproc):
    """The ptmx device opened through a bind mount under another name is still a pty master (fdinfo names its
    pty); a file merely called ``ptmx`` is not one."""
    base_host(fakeproc)
    hidden, _hidden_shell = fakeproc.mosh_login(USER, session=7, pty=4, tag='tied')
    hidden.fds = [hidden.fds[0], Ptmx(4, path='/home/bob/.cache/term')]
    decoy = fakeproc.add(ppid=1, uid=USER, comm='decoy', tag='decoy',
                         fds=[fakeproc.sock('udp', ('0.0.0.0', 40000)), '/home/bob/ptmx'])
    fakeproc.build()
    disc = Discovery(fakeproc.snapshot(), uids=[USER], judge=fakeproc.judge())
    assert [p.pid for p in disc.mosh_servers()] == [hidden.pid]
    assert disc.snap.get(decoy.pid).fds.pty_masters == []
    assert [s.tty for s in disc.sessions() if s.leader.pid == hidden.pid] == ['pts/4']


def test_a_later_scan_ties_newcomers_by_the_plans_labels(fakeproc):
    """After the leader is gone, what forks from the session still carries its audit session and logind
    scope: the plan's labels tie it; another login of the same user and other users stay out."""
    base_host(fakeproc)
    server, shell = login(fakeproc)
    plan = plan_for(fakeproc)
    fakeproc.remove(server.pid)
    late = fakeproc.spawn(shell, 'late', daemon=True, tag='late')
    unlabelled = fakeproc.add(uid=USER, comm='cron-job', loginuid=USER, sessionid=9)
    fakeproc.build()
    snap = fakeproc.snapshot()
    assert set(p.pid for p in snap if plan.tied(p)) == fakeproc.pids('tied', 'late') - {server.pid}
    assert plan.session_of(snap.get(late.pid)) is plan.sessions[0]
    assert plan.session_of(snap.get(unlabelled.pid)) is None

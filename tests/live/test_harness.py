"""Self-tests of the live harness (tests/lib/sgtest): they prove the test world is real.

Run as root: ``python3 -m pytest tests/live/test_harness.py``.
"""

from __future__ import annotations

import os
import signal

import pytest

import sgtest
from sgtest import AUDIT_UNSET, MOSH_EXITING, procfs, utmp
from sgtest.escapees import ALL_KINDS

pytestmark = pytest.mark.live


def pts_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/0")


# --------------------------------------------------------------------------- sshd


def test_sshd_is_dedicated_and_listens_on_loopback(sshd):
    assert sshd.address.startswith("127.")
    assert sshd.running()
    assert sshd.port and sshd.port != 22
    with open(sshd.config_path) as fh:
        conf = fh.read()
    assert "UsePAM yes" in conf and "PasswordAuthentication no" in conf
    with open(sshd.pid_file) as fh:
        assert int(fh.read().strip()) == sshd.pid


def test_ssh_login_gets_audit_loginuid_and_sessionid(sshd, user_factory):
    user = user_factory()
    loginuid, sessionid = sshd.audit_ids(user)
    assert loginuid == user.uid
    assert sessionid != AUDIT_UNSET
    # every login is a new audit session
    assert sshd.audit_ids(user)[1] != sessionid


def test_run_as_reports_user(sshd, user_factory):
    user = user_factory()
    assert sshd.run_as(user, "id -un").stdout.strip() == user.name


# --------------------------------------------------------------------------- mosh


def test_mosh_session_comes_up_through_sshd(user_factory, mosh_session_factory):
    user = user_factory()
    s = mosh_session_factory(user)
    print(f"\nmosh session up in {s.connect_seconds:.2f}s")
    assert s.client_running()
    assert s.client_exit_status() is None
    assert s.client.comm == "mosh-client"
    server, shell = s.server, s.shell
    assert server.comm == "mosh-server" and server.uid == user.uid
    assert server.argv0 == "mosh-server" and "new" in server.cmdline
    assert server.ppid == 1, "daemon should be reparented to PID 1"
    assert server.tty_nr == 0
    assert s.port in procfs.udp_ports(server.pid)
    assert procfs.has_ptmx(server.pid)
    assert shell.ppid == server.pid and shell.comm == "bash" and shell.argv0 == "-bash"
    assert shell.sid == shell.pid  # forkpty child is a session leader
    # the shell really works
    s.send("echo $((6*7))-$USER")
    s.wait_screen(rf"^42-{user.name}\s*$")


def test_mosh_server_carries_audit_session(user_factory, mosh_session_factory):
    user = user_factory()
    s = mosh_session_factory(user)
    assert s.server.loginuid == user.uid
    assert s.server.sessionid not in (None, AUDIT_UNSET)
    assert s.shell.loginuid == user.uid
    assert s.shell.sessionid == s.server.sessionid


def test_escapees_share_the_mosh_sessionid(user_factory, mosh_session_factory):
    user = user_factory()
    s = mosh_session_factory(user)
    esc = sgtest.start_escapees(s)
    assert set(esc) == set(ALL_KINDS) | {"tmux_child"}
    for kind, e in esc.items():
        assert e.alive(), kind
        assert e.proc.uid == user.uid, kind
        assert e.proc.loginuid == user.uid, kind
        assert e.proc.sessionid == s.server.sessionid, kind
        assert e.marker in e.proc.cmd, kind
    # they are what they claim to be
    assert esc["setsid"].proc.sid == esc["setsid"].pid
    assert esc["setsid"].proc.ppid == 1
    assert esc["doublefork"].proc.ppid == 1
    assert esc["doublefork"].proc.sid == s.shell.sid
    assert esc["nohup"].proc.ppid == s.shell.pid
    assert esc["tmux"].proc.ppid == 1 and esc["tmux"].proc.comm == "tmux: server"
    assert esc["tmux_child"].proc.ppid == esc["tmux"].pid
    with open(f"/proc/{esc['trap'].pid}/status") as fh:
        ign = int(next(l for l in fh if l.startswith("SigIgn:")).split()[1], 16)
    assert ign & (1 << (signal.SIGTERM - 1)) and ign & (1 << (signal.SIGHUP - 1))


def test_sigterm_to_server_ends_client_cleanly_and_escapees_survive(user_factory, mosh_session_factory):
    user = user_factory()
    s = mosh_session_factory(user)
    esc = sgtest.start_escapees(s, ["nohup", "setsid"])
    os.kill(s.server_pid, signal.SIGTERM)
    assert s.wait_client_exit(timeout=10) == 0
    assert MOSH_EXITING in s.screen(history=True)
    procfs.wait_gone([s.server], timeout=10)
    assert not s.client_running()
    for kind, e in esc.items():
        assert e.alive(), f"{kind} escapee should survive the server"


def test_kill_client_only_leaves_server_waiting(user_factory, mosh_session_factory):
    user = user_factory()
    s = mosh_session_factory(user)
    s.kill_client()
    assert s.client_exit_status() == 128 + signal.SIGKILL
    assert not s.client_running()
    assert s.server.alive() and s.shell.alive()


def test_spoofed_server_hides_its_name(user_factory, mosh_session_factory):
    user = user_factory()
    server_opt = sgtest.spoofed_server(user)
    s = mosh_session_factory(user, server=server_opt)
    with open(f"/proc/{s.server_pid}/comm") as fh:
        comm = fh.read().strip()
    assert comm != "mosh-server"
    assert comm == "kworker"
    assert s.server.argv0 == "[kworker/0:1]"
    assert "mosh-server" not in s.server.cmd
    assert procfs.exe(s.server_pid) == os.path.join(user.home, ".cache/x/kworker")
    assert s.server.sessionid not in (None, AUDIT_UNSET)
    s.send("echo spoof-$((1+1))")
    s.wait_screen(r"^spoof-2\s*$")


def test_command_session(user_factory, mosh_session_factory):
    user = user_factory()
    s = mosh_session_factory(user, command=["bash", "--norc", "-i"], timeout=30)
    assert s.shell.cmdline[:2] == ("bash", "--norc")
    s.send("echo cmd-$((2+3))")
    s.wait_screen(r"^cmd-5\s*$")


def test_two_sessions_of_one_user_are_told_apart(user_factory, mosh_session_factory):
    user = user_factory()
    a = mosh_session_factory(user)
    b = mosh_session_factory(user)
    assert a.server_pid != b.server_pid and a.port != b.port
    assert a.server.sessionid != b.server.sessionid


def test_utmp_has_via_mosh_record_while_attached(user_factory, mosh_session_factory):
    user = user_factory()
    s = mosh_session_factory(user)
    rec = sgtest.wait_for(s.utmp_record, 10, "utmp record for the mosh server")
    sgtest.wait_for(lambda: (s.utmp_record() or rec).attached, 10, "'via mosh' record")
    rec = s.utmp_record()
    assert rec.live and rec.type == utmp.USER_PROCESS
    assert rec.user == user.name
    assert rec.host == f"127.0.0.1 via mosh [{s.server_pid}]"
    assert rec.mosh_pid == s.server_pid and rec.mosh_client_ip == "127.0.0.1"
    assert "/dev/" + rec.line == pts_of(s.shell_pid)
    os.kill(s.server_pid, signal.SIGTERM)
    s.wait_client_exit(10)
    sgtest.wait_for(lambda: s.utmp_record() is None, 10, "utmp record to be retired")


# --------------------------------------------------------------------------- ssh


def test_ssh_session(user_factory, ssh_session_factory):
    user = user_factory()
    s = ssh_session_factory(user)
    assert s.running() and s.exit_status() is None
    assert s.shell.loginuid == user.uid and s.shell.sessionid != AUDIT_UNSET
    assert s.sshd_session.comm.startswith("sshd")
    s.send("echo ssh-$((3*3))")
    s.wait_screen(r"^ssh-9\s*$")
    s.send("exit 3")
    assert s.wait_exit(10) == 3


# --------------------------------------------------------------------------- bystander


def test_bystander_records_and_detects_damage(bystander):
    b = bystander
    bystander.assert_untouched()
    assert b.session.server_pid in b.pids and b.job.pid in b.pids and b.session.shell_pid in b.pids
    assert b.user.name.startswith("sgb")
    os.kill(b.job.pid, signal.SIGKILL)
    procfs.wait_gone([b.job.proc])
    with pytest.raises(AssertionError, match="gone or replaced"):
        b.assert_untouched()


# --------------------------------------------------------------------------- helpers and teardown


def test_pids_of_uid_and_alive(user_factory, mosh_session_factory):
    user = user_factory()
    s = mosh_session_factory(user)
    pids = sgtest.pids_of_uid(user.uid)
    assert s.server_pid in pids and s.shell_pid in pids
    assert sgtest.alive(s.server_pid, s.server.starttime)
    assert not sgtest.alive(s.server_pid, s.server.starttime + 1)
    assert not sgtest.alive(2 ** 22 + 7)


def test_teardown_leaves_nothing(sg_harness):
    scope = sg_harness.scope("teardown-check")
    try:
        user = scope.user()
        s = scope.mosh(user)
        esc = sgtest.start_escapees(s)
        ssh = scope.ssh(user)
        orphan = scope.user()
        so = scope.mosh(orphan)
        orphan.drop_account()  # numeric UID only, processes still running
        assert not orphan.account_exists() and so.server.alive()
        tmux_servers = [s.term.server, ssh.term.server, so.term.server]
        user_procs = user.processes() + orphan.processes()
        assert len(user_procs) >= 10
    finally:
        scope.cleanup()
    for u in (user, orphan):
        assert not procfs.procs_of_uid(u.uid), u
        assert not u.account_exists()
        assert not os.path.exists(u.home)
        assert not any(r.user == u.name for r in utmp.records())
    assert not any(p.alive() for p in user_procs)
    assert not any(p.alive() for p in tmux_servers)
    assert not any(e.alive() for e in esc.values())
    assert not s.client.alive() and not ssh.client.alive()
    assert not os.path.exists(scope.dir)
    assert sg_harness.leaks([user, orphan], scope.dir) == []


def test_harness_finish_stops_its_sshd():
    h = sgtest.Harness().start()
    try:
        scope = h.scope("finish-check")
        user = scope.user()
        s = scope.mosh(user)
        sshd_pid = h.sshd.pid
        sshd_start = h.sshd.starttime
    finally:
        h.finish()  # must clean the scope's user even without scope.cleanup()
    assert not procfs.alive(sshd_pid, sshd_start)
    assert not procfs.procs_of_uid(user.uid)
    assert not user.account_exists()
    assert not os.path.exists(h.state_dir)
    assert not s.client.alive()

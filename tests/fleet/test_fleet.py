"""Live tests of the fleet itself: namespaced hosts on one machine (tests/fleet/README.md).

Run as root: ``.venv/bin/python -m pytest tests/fleet -q``.
"""

from __future__ import annotations

import grp
import os
import signal
import socket
import subprocess
import time

import pytest
import yaml

import sgtest
from sgtest import AUDIT_UNSET, MOSH_EXITING, HarnessError, procfs, utmp
from sgtest.fleet import NAMESPACES, Fleet, new_state_dir
from sgtest.fleet.mounts import mounts_touching
from sgtest.fleet.syslog import auth_log
from sgtest.waiting import wait_for

pytestmark = pytest.mark.fleet

FLEET_CMD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fleet")
PY_GROUPS = {"py39": "3.9", "py311": "3.11", "py313": "3.13"}


def ns(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def ns_or_none(pid: int, kind: str):
    try:
        return ns(pid, kind)
    except OSError:
        return None


def read(path: str) -> str:
    with open(path, errors="replace") as fh:
        return fh.read()


def nspid_chain(pid: int) -> list:
    with open(f"/proc/{pid}/status") as fh:
        return next(line.split()[1:] for line in fh if line.startswith("NSpid:"))


def mounts_below(path: str) -> list:
    """mountinfo lines of *every* mount namespace on the machine that touch ``path``."""
    seen = {}
    for pid in procfs.all_pids():
        link = ns_or_none(pid, "mnt")
        if link is not None:
            seen.setdefault(link, pid)
    out = []
    for mnt, pid in seen.items():
        out += [f"{mnt}: {line}" for line in mounts_touching([path], pid)]
    return out


def unix_sockets_below(path: str) -> list:
    with open("/proc/net/unix") as fh:
        return [f[7] for f in (line.split() for line in fh.read().splitlines()[1:])
                if len(f) >= 8 and f[7].startswith(path + "/")]


# --------------------------------------------------------------------------- hosts


def test_hosts_have_own_namespaces_hostname_sshd_and_run(fleet):
    hosts = fleet.hosts
    assert len(hosts) >= 4
    assert len({h.name for h in hosts}) == len(hosts)
    utmp_gid = grp.getgrnam("utmp").gr_gid
    for h in hosts:
        assert h.name == f"sghost{h.index:02d}" and h.address == f"127.0.0.{h.index + 1}"
        assert h.run(["hostname"]).stdout.strip() == h.name
        assert h.run(["cat", "/etc/hostname"]).stdout.strip() == h.name
        for kind in NAMESPACES:
            assert ns(h.init_pid, kind) != ns(os.getpid(), kind), (h, kind)
            assert ns(h.init_pid, kind) == h.namespaces[kind]
        # the init is PID 1 in there (a global PID outside), and it is our hostinit
        assert nspid_chain(h.init_pid) == [str(h.init_pid), "1"]
        init = procfs.read_proc(1, h.proc_root)
        assert init.cmdline[-2].endswith("hostinit.py") and init.proc_root == h.proc_root
        # sshd: supervised by the init, holds the only listening socket, on its own address
        assert h.sshd.listening()
        sshd = procfs.read_proc(h.sshd.pid, h.proc_root)
        assert sshd.ppid == 1 and sshd.comm == "sshd"
        socks = procfs.inet_sockets(h.sshd.pid, "tcp", h.proc_root)
        assert [(ip, port) for ip, port, _ino in socks] == [(h.address, 22)]
        # own /run (tmpfs) with /run/sshd and /run/utmp root:utmp 0664
        assert h.run(["findmnt", "-n", "-o", "FSTYPE", "/run"]).stdout.strip() == "tmpfs"
        st = os.stat(h.path("/run/utmp"))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, utmp_gid, 0o664)
        assert os.path.isdir(h.path("/run/sshd"))
    for kind in NAMESPACES:
        assert len({h.namespaces[kind] for h in hosts}) == len(hosts), kind
    assert not socket.gethostname().startswith("sghost")


def test_files_are_per_host(fleet):
    a, b = fleet.hosts[:2]
    marker = f"sgfleet-marker-{os.getpid()}-{time.monotonic_ns()}"
    for d in ("/etc", "/home", "/root", "/tmp", "/var/tmp", "/var/log", "/run"):
        a.run(["touch", f"{d}/{marker}"])
        try:
            assert os.path.exists(a.path(f"{d}/{marker}")), d
            assert not os.path.exists(b.path(f"{d}/{marker}")), d
            assert not os.path.exists(f"{d}/{marker}"), d  # the machine itself
        finally:
            a.run(["rm", "-f", f"{d}/{marker}"])
    assert os.stat(a.path("/root")).st_mode & 0o777 == 0o711
    # the ops account exists on every host, not on the machine
    for h in fleet.hosts:
        assert h.run(["id", "-un", "ops"]).stdout.strip() == "ops"
        assert h.run(["sudo", "-l", "-U", "ops"]).stdout.count("NOPASSWD: ALL") == 1
    assert subprocess.run(["getent", "passwd", "ops"], capture_output=True, check=False).returncode == 2


def test_accounts_exist_only_on_chosen_hosts(fleet, user_factory):
    a, b = fleet.hosts[:2]
    u = user_factory(hosts=[a])
    assert u.on(a).account_exists()
    assert u.hosts == [a]
    assert b.run(["getent", "passwd", u.name], check=False).returncode == 2
    assert subprocess.run(["getent", "passwd", u.name], capture_output=True, check=False).returncode == 2
    with pytest.raises(HarnessError, match="no account on"):
        u.on(b)
    assert a.sshd.run_as(u.on(a), "hostname").stdout.strip() == a.name
    cp = subprocess.run(b.sshd.ssh_argv(u.on(a), "true"), capture_output=True, text=True, timeout=30,
                        stdin=subprocess.DEVNULL, check=False)
    assert cp.returncode == 255 and "Permission denied" in cp.stderr


def test_lock_and_expiry_stay_on_their_host(fleet, user_factory):
    a, b = fleet.hosts[:2]
    u = user_factory(hosts=[a, b])
    shadow_b = b.run(["getent", "shadow", u.name]).stdout
    a.run(["usermod", "-L", u.name])
    assert a.run(["getent", "shadow", u.name]).stdout.split(":")[1].startswith("!")
    # a locked password does not stop key logins under UsePAM yes (sshd skips the password check) ...
    assert a.sshd.run_as(u.on(a), "echo still-in").stdout.strip() == "still-in"
    # ... account expiry does
    a.run(["usermod", "-e", "1", u.name])
    assert a.sshd.run_as(u.on(a), "true", check=False).returncode == 255
    # and the other host is untouched
    assert b.run(["getent", "shadow", u.name]).stdout == shadow_b
    assert b.sshd.run_as(u.on(b), "hostname").stdout.strip() == b.name


def test_ssh_login_gets_a_real_audit_session_on_every_host(fleet, user_factory):
    u = user_factory()
    seen = set()
    for h in fleet.hosts:
        loginuid, sessionid = h.sshd.audit_ids(u.on(h))
        assert loginuid == u.uid, h
        assert sessionid not in (AUDIT_UNSET, None), h
        assert sessionid not in seen
        seen.add(sessionid)
        # like a freshly booted machine: init and sshd have no login session
        assert procfs.read_proc(1, h.proc_root).loginuid == AUDIT_UNSET
        assert procfs.read_proc(h.sshd.pid, h.proc_root).loginuid == AUDIT_UNSET


def test_hosts_differ_in_python_and_psutil(fleet):
    profiles = set()
    for h in fleet.hosts:
        profiles.add(h.profile.name)
        version = h.run_python("import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
        assert [v for g, v in PY_GROUPS.items() if g in h.groups] == [version], h
        has_psutil = h.run_python("import psutil", check=False).returncode == 0
        assert has_psutil == h.psutil, h
        assert ("psutil" in h.groups) == h.psutil and ("no_psutil" in h.groups) != h.psutil
        # the unprivileged Ansible user can run the interpreter too
        assert h.run(["runuser", "-u", "ops", "--", h.python, "-c", "print(42)"]).stdout.strip() == "42", h
    assert profiles >= {"debian-py311", "pyenv-py39", "pyenv-py313", "debian-py311-nopsutil"}
    hidden = [h for h in fleet.hosts if h.profile.hide_psutil]
    assert hidden
    for h in hidden:  # not a broken or empty package: no psutil at all there
        out = h.run_python("import importlib.util as u; print(u.find_spec('psutil'))").stdout.strip()
        assert out == "None"
    # only hidden on those hosts: the machine's own python3 has it (python3-psutil)
    assert subprocess.run(["/usr/bin/python3", "-c", "import psutil"], check=False).returncode == 0


# --------------------------------------------------------------------------- sessions


def test_mosh_session_server_lives_in_the_host(fleet, user_factory, mosh_session_factory):
    h, other = fleet.hosts[1], fleet.hosts[0]
    u = user_factory(hosts=[h, other])
    s = mosh_session_factory(u, h)
    print(f"\nmosh session to {h.name} up in {s.connect_seconds:.2f}s")
    # the client runs on the machine (the "laptop")
    assert s.client_running() and s.client.comm == "mosh-client" and s.client.proc_root == "/proc"
    # the server runs in the host: its PID is the host's, its parent the host's init
    assert s.server.proc_root == h.proc_root
    assert s.server.comm == "mosh-server" and s.server.uid == u.uid and s.server.ppid == 1
    assert s.server.loginuid == u.uid and s.server.sessionid not in (None, AUDIT_UNSET)
    gpid = h.global_pid(s.server_pid)
    assert gpid is not None and nspid_chain(gpid) == [str(gpid), str(s.server_pid)]
    for kind in NAMESPACES:
        assert ns(gpid, kind) == h.namespaces[kind]
    assert procfs.read_proc(gpid).starttime == s.server.starttime
    assert not any(p.comm == "mosh-server" for p in procfs.procs_of_uid(u.uid, proc_root=other.proc_root))
    assert [(ip, port) for ip, port, _i in procfs.inet_sockets(s.server_pid, "udp", h.proc_root)] == [(h.address, s.port)]
    s.send("echo host-$(hostname)-$((6*7))")
    s.wait_screen(rf"^host-{h.name}-42\s*$")
    # utmp: the host's, not the machine's
    rec = sgtest.wait_for(s.utmp_record, 10, "utmp record of the mosh server in the host")
    assert rec.user == u.name and rec.mosh_pid == s.server_pid
    assert not any(r.user == u.name for r in utmp.records())
    # escapees start inside the host and carry the session
    esc = sgtest.start_escapees(s)
    for kind, e in esc.items():
        assert e.proc.proc_root == h.proc_root and e.proc.sessionid == s.sessionid, kind
    # signals reach the server by its in-host PID: SIGTERM ends the client cleanly
    assert procfs.signal_proc(s.server_pid, s.server.starttime, signal.SIGTERM, h.proc_root)
    assert s.wait_client_exit(10) == 0
    assert MOSH_EXITING in s.screen(history=True)
    assert all(e.alive() for e in esc.values())


def test_mosh_session_with_a_command(fleet, user_factory, mosh_session_factory):
    h = fleet.hosts[2]
    u = user_factory(hosts=[h])
    s = mosh_session_factory(u, command=["bash", "-c", "echo out-$(hostname); exec sleep 600"])
    s.wait_screen(rf"^out-{h.name}\s*$")
    assert s.client_running() and s.client_exit_status() is None
    assert s.shell.comm == "sleep" or s.shell.cmdline[:2] == ("bash", "-c")


def test_plain_ssh_session(fleet, user_factory, ssh_session_factory):
    h = fleet.hosts[3]
    u = user_factory(hosts=[h])
    s = ssh_session_factory(u)
    assert s.running()
    assert s.shell.proc_root == h.proc_root and s.sshd_session.comm.startswith("sshd")
    assert s.shell.loginuid == u.uid and s.shell.sessionid not in (None, AUDIT_UNSET)
    s.send("echo ssh-$(hostname)")
    s.wait_screen(rf"^ssh-{h.name}\s*$")
    s.send("exit 3")
    assert s.wait_exit(10) == 3


def test_killing_a_user_on_one_host_spares_the_other_hosts(fleet, user_factory, mosh_session_factory):
    a, b = fleet.hosts[:2]
    u = user_factory(hosts=[a, b])
    sa = mosh_session_factory(u, a)
    sb = mosh_session_factory(u, b)
    killed = u.on(a).kill_all()
    assert sa.server.key() in {p.key() for p in killed}
    assert not sa.server.alive() and not u.on(a).processes()
    assert sb.server.alive() and sb.shell.alive() and sb.client_running()


def test_bystander_on_a_host(fleet, bystander_factory):
    h = fleet.hosts[0]
    b = bystander_factory(h)
    b.assert_untouched()
    assert b.user.host is h and all(p.proc_root == h.proc_root for p in b.recorded.values())
    procfs.kill_procs([b.job.proc])
    procfs.wait_gone([b.job.proc])
    with pytest.raises(AssertionError, match="gone or replaced"):
        b.assert_untouched()


# --------------------------------------------------------------------------- ansible


def test_ansible_reaches_every_host_as_ops_and_becomes_root(fleet):
    names = {h.name for h in fleet.hosts}
    r = fleet.ansible("fleet", "ansible.builtin.ping")
    assert r.rc == 0, r.describe()
    assert set(r.hosts) == names and all(res["ping"] == "pong" for res in r.hosts.values())
    r = fleet.ansible("fleet", "ansible.builtin.setup", "filter=ansible_python,ansible_user_id,ansible_hostname")
    assert r.rc == 0, r.describe()
    for h in fleet.hosts:
        facts = r.hosts[h.name]["ansible_facts"]
        assert facts["ansible_user_id"] == "root", h
        assert facts["ansible_hostname"] == h.name
        assert facts["ansible_python"]["executable"] == h.python
    r = fleet.ansible("fleet", "ansible.builtin.command", "id -u")
    assert {n: res["stdout"] for n, res in r.hosts.items()} == {n: "0" for n in names}, r.describe()
    r = fleet.ansible("fleet", "ansible.builtin.command", "id -un", extra_vars={"ansible_become": False})
    assert {n: res["stdout"] for n, res in r.hosts.items()} == {n: "ops" for n in names}, r.describe()
    r = fleet.ansible("no_psutil", "ansible.builtin.ping")
    assert set(r.hosts) == {h.name for h in fleet.hosts if not h.psutil}, r.describe()
    with open(fleet.inventory_path) as fh:
        inv = yaml.safe_load(fh)
    fleet_group = inv["all"]["children"]["fleet"]["hosts"]
    for h in fleet.hosts:
        hv = fleet_group[h.name]
        assert hv["ansible_host"] == h.address and hv["ansible_port"] == 22 and hv["ansible_user"] == "ops"
        assert hv["ansible_become"] is True and hv["ansible_python_interpreter"] == h.python
        assert "StrictHostKeyChecking=no" in hv["ansible_ssh_common_args"]
        assert "UserKnownHostsFile=/dev/null" in hv["ansible_ssh_common_args"]
        for g in h.groups:
            assert h.name in inv["all"]["children"][g]["hosts"]


# --------------------------------------------------------------------------- init


def test_init_supervises_sshd_and_ignores_signals_from_inside(fleet):
    h = fleet.hosts[-1]
    h.sshd.stop()
    assert not h.sshd_answers() and not h.sshd.running()
    h.sshd.start()
    assert h.sshd.listening()
    crashed = procfs.read_proc(h.sshd.pid, h.proc_root)
    procfs.kill_procs([crashed], signal.SIGKILL)  # a crash: restarted by the init
    sgtest.wait_for(lambda: h.sshd.listening() and h.sshd.starttime != crashed.starttime, 15, "sshd restart")
    h.run(["kill", "-TERM", "1"])  # root inside the host cannot shut it down
    sgtest.wait_for(lambda: "ignoring SIGTERM from PID" in read(h.init_log), 10, "init to log the signal")
    assert h.alive() and h.sshd.listening()


def test_each_host_logs_to_its_own_syslog(fleet):
    """/dev/log inside a host reaches that host's own rsyslogd, which writes to the host's own /var/log."""
    a, b = fleet.hosts[0], fleet.hosts[1]
    marker = "sgtest-syslog-%d-%d" % (os.getpid(), time.monotonic_ns())

    def logged(host):
        path = auth_log(host.hostdir)
        if not os.path.exists(path):
            return False
        with open(path, errors="replace") as fh:
            return any(marker in line and "sgtest[" in line for line in fh)

    a.run(["logger", "--id", "-p", "auth.notice", "-t", "sgtest", marker])
    wait_for(lambda: logged(a), 10, "the line in %s" % auth_log(a.hostdir))
    assert not logged(b)
    assert os.readlink("/dev/log") == "/run/sgfleet/dev-log" and not os.path.exists("/run/sgfleet/dev-log")


def test_a_second_sgtest_sshd_can_run_inside_a_host(fleet, user_factory):
    """sgtest.Sshd works on a namespaced host too (state dir, PID file, log inside the host)."""
    h = fleet.hosts[0]
    u = user_factory(hosts=[h])
    extra = sgtest.Sshd(h, "/run/sgtest-extra-sshd").start()
    try:
        assert extra.address == h.address and extra.port != 22
        p = procfs.read_proc(extra.pid, h.proc_root)
        assert p.comm == "sshd" and extra.running()
        assert os.path.exists(h.path(extra.config_path)) and not os.path.exists(extra.config_path)
        loginuid, sessionid = extra.audit_ids(u.on(h))
        assert loginuid == u.uid and sessionid != AUDIT_UNSET
        assert extra.run_as(u.on(h), "hostname").stdout.strip() == h.name
    finally:
        extra.stop()
    assert not p.alive() and not extra.running()
    h.run(["rm", "-rf", "/run/sgtest-extra-sshd"])


def test_leftover_detector_sees_a_running_fleet(fleet):
    found = fleet.leftovers()
    for h in fleet.hosts:
        assert any(x.startswith(f"{h.name}: init process still exists") for x in found), h
    assert any("process in a fleet pid namespace" in x for x in found)
    assert any(x.startswith("mount in ") for x in found)


# --------------------------------------------------------------------------- whole fleets


def test_down_stops_everything_and_leaves_nothing():
    f = Fleet(new_state_dir("dn"), kind="pytest")
    sd = f.state_dir
    try:
        f.up(2, first=None)
        a, b = f.hosts
        u = f.create_user(hosts=[a, b])
        s = f.mosh(u, a)
        esc = sgtest.start_escapees(s)  # nohup, setsid, a tmux server of the user... in host a
        ss = f.ssh(u, b)
        assert f.ansible("fleet", "ansible.builtin.ping").rc == 0
        masters = [p for p in procfs.iter_procs() if p.argv0.startswith("ssh: ") and sd in p.argv0]
        assert masters, "Ansible's persistent ssh masters should be running"
        ns_links = {k: {h.namespaces[k] for h in f.hosts} for k in NAMESPACES}
        in_hosts = [p for p in procfs.iter_procs() if not p.zombie and ns_or_none(p.pid, "pid") in ns_links["pid"]]
        assert len(in_hosts) >= 2 * 2 + len(esc)  # init + sshd per host, the escapees...
        clients = [s.term.server, ss.term.server, s.client, ss.client] + masters
        unshares = [procfs.read_proc(h.unshare_pid) for h in f.hosts]
        assert mounts_below(sd), "the hosts' mounts should be visible while they run"
        assert unix_sockets_below(sd)
    except BaseException:
        f.down(check=False)
        raise
    t0 = time.monotonic()
    problems = f.down(check=False)
    print(f"\ndown of 2 hosts with sessions: {time.monotonic() - t0:.2f}s")
    assert problems == []
    # Independent checks, not through fleet.leftovers():
    recorded = in_hosts + clients + unshares
    assert [str(p) for p in recorded if p.alive("/proc")] == []
    # Orphans that died (tmux servers, clients, Ansible's ssh masters) may stay zombies of
    # PID 1 for a moment: they must be reaped, too.
    sgtest.wait_for(lambda: not [p for p in recorded if procfs.starttime(p.pid) == p.starttime], 30,
                    lambda: "zombies to be reaped: " + "; ".join(str(procfs.read_proc(p.pid)) for p in recorded
                                                                 if procfs.starttime(p.pid) == p.starttime))
    for p in procfs.iter_procs():
        if p.zombie:
            continue
        for kind in NAMESPACES:
            assert ns_or_none(p.pid, kind) not in ns_links[kind], p
        assert not any(sd in arg for arg in p.cmdline), p
        assert not (p.comm.startswith("tmux") and p.uid == u.uid), p
    assert not procfs.procs_of_uid(u.uid)
    assert mounts_below(sd) == []
    assert unix_sockets_below(sd) == []
    assert not os.path.exists(sd)


def test_down_keeps_the_state_dir_while_something_is_mounted_below_it():
    f = Fleet(new_state_dir("mt"), kind="pytest")
    try:
        f.up(1, first=None)
    except BaseException:
        f.down(check=False)
        raise
    target = os.path.join(f.hosts[0].hostdir, "var-tmp")
    subprocess.run(["mount", "-t", "tmpfs", "sgfleet-test", target], check=True)
    try:
        with open(os.path.join(target, "canary"), "w") as fh:
            fh.write("must survive\n")
        problems = f.down(check=False)
        assert any(p.startswith("mount in ") and target in p for p in problems), problems
        assert os.path.exists(os.path.join(target, "canary"))
        assert os.path.isdir(f.state_dir)
        assert not f.hosts[0].alive()
        with pytest.raises(HarnessError, match="left things behind"):
            f.down()
    finally:
        subprocess.run(["umount", target], check=True)
    assert f.down(check=False) == []
    assert not os.path.exists(f.state_dir)


def test_cli_up_status_inventory_run_down():
    sd = new_state_dir("cl")

    def fleet_cmd(*args, check=True):
        cp = subprocess.run([FLEET_CMD, "--state-dir", sd, *args], capture_output=True, text=True,
                            timeout=180, check=False)
        if check:
            assert cp.returncode == 0, f"{args}: rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
        return cp

    try:
        out = fleet_cmd("up", "2", "--first", "auto").stdout
        assert "fleet up: 2 hosts" in out
        status = fleet_cmd("status").stdout
        assert status.count("answers") == 2
        path = fleet_cmd("inventory", "--path").stdout.strip()
        assert path == os.path.join(sd, "inventory.yml")
        inv = yaml.safe_load(fleet_cmd("inventory").stdout)
        names = sorted(inv["all"]["children"]["fleet"]["hosts"])
        assert len(names) == 2
        assert fleet_cmd("run", names[1], "--", "hostname").stdout.strip() == names[1]
        # the CLI process is gone: the fleet must be found and stopped from its state dir alone
        out = fleet_cmd("down").stdout
        assert "verified gone" in out
    finally:
        if os.path.exists(sd):
            fleet_cmd("down", check=False)
    assert not os.path.exists(sd)
    assert not [p for p in procfs.iter_procs() if not p.zombie and any(sd in a for a in p.cmdline)]
    assert fleet_cmd("status", check=False).returncode == 1


def test_twenty_hosts_come_up_answer_and_go_down():
    f = Fleet(new_state_dir("tw"), kind="pytest")
    t0 = time.monotonic()
    try:
        f.up(20, first=None)
        up_s = time.monotonic() - t0
        assert len(f.hosts) == 20 and all(h.sshd_answers() for h in f.hosts)
        t1 = time.monotonic()
        r = f.ansible("fleet", "ansible.builtin.ping")
        ping_s = time.monotonic() - t1
        assert r.rc == 0 and len(r.hosts) == 20, r.describe()
    finally:
        t2 = time.monotonic()
        problems = f.down(check=False)
        down_s = time.monotonic() - t2
    # Timings are reported, never asserted (speed is measured, not tested).
    print(f"\n20 hosts: up {up_s:.1f}s ({f.timings}), ansible ping {ping_s:.1f}s, down {down_s:.1f}s")
    assert problems == []

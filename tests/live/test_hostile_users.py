"""revoke_sessions and session_facts against users who fight back: a fork-hopper, a SIGCONT spammer, a session
that keeps working while a warning is shown, and process names made of invalid UTF-8, bidi overrides and
terminal escapes.

Every test checks the real system afterwards (/proc, the mosh client's exit and screen, the bystander), not
only what the module returned.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from sgtest import AUDIT_UNSET, MOSH_EXITING, procfs
from sgtest.escapees import new_marker
from sgtest.waiting import wait_for
from test_revoke_sessions import assert_ok, ended, tty_of

# What no string in a result, and nothing ansible-playbook prints, may hold raw: C0 controls but newline
# and tab, DEL, C1 controls, bidi and zero-width format characters, and lone surrogates (undecodable bytes
# smuggled through as str).
UNSAFE = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]')

HOPPER = "import os\\nwhile True:\\n  if os.fork(): os._exit(0)"


def raw_argv(pid):
    """argv of ``pid`` as the kernel holds it (bytes), or None when it is gone."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            raw = f.read()
    except OSError:
        return None
    return raw.rstrip(b'\0').split(b'\0') if raw else []


def procs_by_argv(uid, pred):
    """Live processes of ``uid`` whose raw argv satisfies ``pred``."""
    out = []
    for p in procfs.procs_of_uid(uid):
        argv = raw_argv(p.pid)
        if argv and pred(argv):
            out.append(p)
    return out


def newest_with(marker, duration):
    """{pid: (pgid, audit sessionid)} of live processes carrying ``marker`` among the newest PIDs, sampled for
    ``duration`` seconds. A fork-hopper lives a fraction of a millisecond per PID: a full /proc scan never sees
    it alive, but its current incarnation is almost always one of the last PIDs handed out."""
    token = marker.encode()
    found = {}
    end = time.monotonic() + duration
    while time.monotonic() < end:
        with open('/proc/sys/kernel/ns_last_pid') as f:
            last = int(f.read())
        for pid in range(last, max(last - 16, 1), -1):
            argv = raw_argv(pid)
            if not argv or token not in argv:
                continue
            try:
                with open('/proc/%d/stat' % pid) as f:
                    rest = f.read().rsplit(')', 1)[1].split()
                with open('/proc/%d/sessionid' % pid) as f:
                    audit = int(f.read())
            except (OSError, ValueError):
                continue
            if rest[0] not in ('Z', 'X'):
                found[pid] = (int(rest[2]), audit)
    return found


def group_exists(pgid):
    """Whether process group ``pgid`` still has a member (zombies count until they are reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def cpu_ticks(pid):
    with open('/proc/%d/stat' % pid) as f:
        rest = f.read().rsplit(')', 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (fields 14 and 15)


def cgroup_of(pid):
    with open('/proc/%d/cgroup' % pid) as f:
        return [ln[3:] for ln in f.read().splitlines() if ln.startswith('0::')]


def unsafe_strings(obj, path='result'):
    """(where, repr) of every string (key or value) in ``obj`` that holds a raw unsafe character."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += unsafe_strings(k, '%s key' % path) + unsafe_strings(v, '%s[%r]' % (path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += unsafe_strings(v, '%s[%d]' % (path, i))
    elif isinstance(obj, str) and UNSAFE.search(obj):
        out.append((path, obj))
    return out


def as_user(user, argv):
    """Start ``argv`` as ``user``, outside every login (own session, no audit session of theirs)."""
    child = subprocess.Popen(['setpriv', '--reuid=%d' % user.uid, '--regid=%d' % user.gid, '--clear-groups'] + argv,
                             start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd='/')

    def running_as_user():
        p = procfs.read_proc(child.pid)
        return p is not None and p.uid == user.uid and p.cmdline[:1] == (argv[0],)

    wait_for(running_as_user, 10, '%s to run as %s' % (argv[0], user.name))
    return child


def resumed(child, timeout=5.0):
    """SIGSTOP our child ``child`` and tell whether something else resumed it (SIGCONT) within ``timeout``."""
    os.kill(child.pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(child.pid, os.WUNTRACED | os.WCONTINUED | os.WNOHANG)
        if pid and os.WIFCONTINUED(status):
            return True
        time.sleep(0.01)
    # A SIGCONT that came before the stop took effect discards the pending stop: no report, but running.
    return procfs.read_proc(child.pid).state not in ('T', 't')


def reap(*popens):
    for p in popens:
        if p is not None and p.poll() is None:
            p.kill()
        if p is not None:
            p.wait(10)


# --------------------------------------------------------------------------------------------------------------
# 1. A fork-hopper in the session, a SIGCONT spammer of the same user outside it.

def test_fork_hopper_is_caught_and_untied_cont_spammer_is_spared(target, user_factory, mosh_session_factory,
                                                                 bystander):
    user = user_factory()
    session = mosh_session_factory(user)
    audit = session.sessionid
    assert audit not in (None, AUDIT_UNSET), session.server
    marker = new_marker('sghop')
    spammer = sleeper = None
    try:
        # Untied: started by root with the user's UID, in a session of its own, with no audit session of the user.
        spammer = as_user(user, ['bash', '-c', 'while :; do kill -CONT -1; done', 'sgcont'])
        sleeper = as_user(user, ['sleep', '100000'])
        # The spammer really resumes the user's stopped processes: a SIGSTOP freezer would be undone at once.
        assert resumed(sleeper), 'the SIGCONT spammer did not resume a stopped process of the user'

        session.send_line("nohup python3 -c $'%s' %s </dev/null >/dev/null 2>&1 &" % (HOPPER, marker))
        hops = {}
        wait_for(lambda: hops.update(newest_with(marker, 0.2)) or len(hops) >= 5, 20,
                 lambda: 'the fork-hopper to show 5 PIDs; seen %s; screen:\n%s' % (hops, session.screen(history=True)))
        # Every incarnation carries the login's audit session and the job's process group (fork keeps both).
        [(pgid, carried)] = set(hops.values())
        assert carried == audit, 'the hopper does not carry the login audit session %d: %s' % (audit, hops)
        untied = [procfs.read_proc(spammer.pid), procfs.read_proc(sleeper.pid)]
        assert all(p is not None and p.sessionid != audit for p in untied), untied

        result = target.run('revoke_sessions', {'users': [user.name]})

        assert not result.get('failed'), result.get('msg', result)
        # The hopper is gone. A /proc scan cannot tell (it never sees the hopper alive): sample the newest PIDs,
        # then wait for its process group to empty (a live hopper keeps it populated; zombies are reaped by init).
        assert newest_with(marker, 1.0) == {}, ('the fork-hopper still runs; the module reported survivors=%s'
                                                % result['survivors'])
        wait_for(lambda: not group_exists(pgid), 30, 'the hopper process group %d to empty' % pgid)
        # Nothing carries the login's audit session any more: not the server, not the shell, not the hopper.
        tied = [p for p in procfs.procs_of_uid(user.uid) if p.sessionid == audit]
        assert tied == [], 'tied processes survived: %s' % [str(p) for p in tied]
        assert_ok(result, target)
        assert result['changed'] is True
        # The client heard mosh's clean shutdown.
        assert session.wait_client_exit() == 0
        assert MOSH_EXITING in session.screen(history=True)
        # The untied processes are all that is left of the user, running, in no frozen group of the module.
        left = set(p.key() for p in user.processes())
        assert left == set(p.key() for p in untied), [str(p) for p in user.processes()]
        assert spammer.poll() is None and sleeper.poll() is None
        before = cpu_ticks(spammer.pid)
        wait_for(lambda: cpu_ticks(spammer.pid) > before, 5, 'the CONT spammer to use CPU after the revocation')
        for p in untied:
            assert not any('sessionguard-' in g for g in cgroup_of(p.pid)), (p, cgroup_of(p.pid))
        bystander.assert_untouched()
    finally:
        reap(spammer, sleeper)


# --------------------------------------------------------------------------------------------------------------
# 1b. Scope all: the kill(-1) sweep ends a fork-hopper it can reach; one it cannot reach is still caught.

# Runs as the user by its effective UID only (real and saved UID root): kill(-1) as the user cannot signal it.
EUID_HOPPER = "import os,sys\nos.setresuid(0, int(sys.argv[2]), 0)\nwhile True:\n  if os.fork(): os._exit(0)"


def start_hopper(user, marker, euid_only):
    """A fork-hopper started by root outside every login, carrying ``marker``; returns its process group."""
    if euid_only:
        argv = ['/usr/bin/python3', '-c', EUID_HOPPER, marker, str(user.uid)]
    else:
        argv = ['setpriv', '--reuid=%d' % user.uid, '--regid=%d' % user.gid, '--clear-groups',
                '/usr/bin/python3', '-c', HOPPER.replace('\\n', '\n'), marker]
    child = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd='/')
    hops = {}
    wait_for(lambda: hops.update(newest_with(marker, 0.2)) or len(hops) >= 5, 20,
             lambda: 'the fork-hopper to show 5 PIDs; seen %s' % hops)
    child.wait(10)
    return child.pid


def stop_group(pgid):
    """killpg is atomic against fork: the whole hopper goes at once."""
    deadline = time.monotonic() + 10
    while group_exists(pgid) and time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.05)


@pytest.mark.parametrize('euid_only,alone', [(False, False), (True, False), (False, True)],
                         ids=['reached-by-kill-1', 'effective-uid-only', 'nothing-else-to-see'])
def test_scope_all_ends_a_fork_hopper_whether_or_not_kill_minus_1_reaches_it(target, user_factory, bystander,
                                                                             euid_only, alone):
    user = user_factory()
    marker = new_marker('sghop')
    # Beside the hopper, a process every scan sees; alone, the hopper is all the user runs and no scan sees it.
    sleeper = None if alone else as_user(user, ['sleep', '100000'])
    pgid = start_hopper(user, marker, euid_only)
    try:
        result = target.run('revoke_sessions', {'users': [user.name], 'scope': 'all'})

        assert not result.get('failed'), result.get('msg', result)
        assert newest_with(marker, 1.0) == {}, ('the fork-hopper still runs; the module reported survivors=%s'
                                                % result['survivors'])
        wait_for(lambda: not group_exists(pgid), 30, 'the hopper process group %d to empty' % pgid)
        assert_ok(result, target)
        assert result['changed'] is True
        assert result['swept_unseen'] == ([user.uid] if alone else [])
        assert user.processes() == []
        bystander.assert_untouched()
    finally:
        stop_group(pgid)
        reap(sleeper)


# --------------------------------------------------------------------------------------------------------------
# 2. Frozen before warned: nothing of the session runs once the notice can be seen.

def last_beat(path):
    """The last complete heartbeat line (wall-clock seconds), and how many there are."""
    with open(path) as f:
        lines = [ln for ln in f.read().split('\n')[:-1] if ln]
    return (float(lines[-1]) if lines else None), len(lines)


def test_the_session_is_frozen_before_the_notice_is_shown(target, user_factory, mosh_session_factory, bystander):
    user = user_factory()
    session = mosh_session_factory(user)
    beat = os.path.join(user.host.path(user.home), 'heartbeat')
    session.send_line("nohup bash -c 'while :; do date +%s.%N >> ~/heartbeat; sleep 0.01; done' sgbeat "
                      "</dev/null >/dev/null 2>&1 &")
    wait_for(lambda: os.path.exists(beat) and last_beat(beat)[1] >= 20, 15, 'the heartbeat to run')
    # The loop's bash (its forks carry the same argv until they exec date or sleep).
    loops = procs_by_argv(user.uid, lambda argv: argv[-1:] == [b'sgbeat'])
    [beater] = [p for p in loops if p.ppid not in set(q.pid for q in loops)]
    assert beater.sessionid == session.sessionid
    notice = 'sessionguard-notice-%d: access revoked' % user.uid
    outcome = {}

    def run():
        outcome['result'] = target.run('revoke_sessions', {'users': [user.name], 'notice': notice})

    worker = threading.Thread(target=run)
    started = time.time()
    worker.start()
    seen_at = last_miss = None
    while worker.is_alive():
        asked = time.time()
        if notice in session.screen():
            seen_at = time.time()
            break
        last_miss = asked
        time.sleep(0.005)
    worker.join()

    result = outcome['result']
    assert_ok(result, target)
    assert seen_at is not None, 'the notice never appeared on the mosh client; screen:\n' + session.screen(history=True)
    assert result['notice_sent_to'] == [tty_of(session.shell)]
    beat_at, _count = last_beat(beat)
    # The heartbeat ran while ansible-playbook started, and stopped before the warning could be read.
    assert beat_at > started, 'the heartbeat had stopped before the revocation began'
    assert beat_at < seen_at, (
        'the session still ran %.3f s after its notice was on the screen (last heartbeat %.3f, notice seen %.3f, '
        'last screen without it %s, freezer %s)'
        % (beat_at - seen_at, beat_at, seen_at, last_miss, result.get('freezer')))
    assert session.wait_client_exit() == 0
    assert MOSH_EXITING in session.screen(history=True)
    assert not beater.alive() and user.processes() == []
    assert last_beat(beat)[0] == beat_at
    bystander.assert_untouched()
    assert notice not in bystander.session.screen(history=True)


# --------------------------------------------------------------------------------------------------------------
# 3. Names made to deceive or to attack the operator's terminal.

def hostile_server():
    """``mosh --server=`` value: the installed mosh-server with an argv0 of invalid UTF-8, RLO and an escape."""
    return "exec -a $'sgsrv\\xe2\\x80\\xae\\x1b[1m\\xe9' mosh-server"


# comm set to ESC [31m, U+009B (CSI) and U+202E, in UTF-8.
_COMM_PY = ('import time;open("/proc/self/comm","wb").write(bytes([27,91,51,49,109,194,155,226,128,174]));'
            'time.sleep(1e6)')


def start_hostile(session, marker):
    """Start, from ``session``'s shell, three processes with hostile argv (and one with a hostile comm).

    Returns ({kind: Proc}, {kind: the escaped text a report must show}).
    """
    quiet = '</dev/null >/dev/null 2>&1'
    session.send_line("( exec -a $'\\xe9vil' sleep 100000 %s & )" % quiet)
    session.send_line("( exec -a $'sgbidi-%s\\xe2\\x80\\xaefdp.exe' sleep 100000 %s & )" % (marker, quiet))
    session.send_line("( exec -a $'sgansi-%s\\x1b[31m\\xc2\\x9b2J' python3 -c '%s' %s & )" % (marker, _COMM_PY, quiet))
    session.sync()
    wanted = {
        'latin1': lambda argv: argv == [b'\xe9vil', b'100000'],
        'bidi': lambda argv: argv == [b'sgbidi-%s\xe2\x80\xaefdp.exe' % marker.encode(), b'100000'],
        'ansi': lambda argv: argv[0] == b'sgansi-%s\x1b[31m\xc2\x9b2J' % marker.encode(),
    }
    found = {}

    def all_found():
        for kind, pred in wanted.items():
            if kind not in found:
                procs = procs_by_argv(session.user.uid, pred)
                assert len(procs) <= 1, procs
                if procs and (kind != 'ansi' or procs[0].comm.startswith('\x1b')):
                    found[kind] = procs[0]
        return len(found) == len(wanted)

    wait_for(all_found, 20, lambda: 'hostile processes %s; screen:\n%s'
             % (sorted(set(wanted) - set(found)), session.screen(history=True)))
    shown = {
        'latin1': '\\xe9vil 100000',
        'bidi': 'sgbidi-%s\\u202efdp.exe 100000' % marker,
        'ansi': 'sgansi-%s\\x1b[31m\\x9b2J -c import time' % marker,
    }
    return found, shown


def mosh_entry(facts, uid):
    assert not facts.get('failed'), facts.get('msg', facts)
    [entry] = [s for s in facts['ansible_facts']['sessionguard_sessions'] if s['uid'] == uid and s['kind'] == 'mosh']
    return entry


def test_hostile_names_are_reported_escaped_and_revoked(target, user_factory, mosh_session_factory, bystander):
    victim, other = user_factory(), user_factory()
    sessions = {u.name: mosh_session_factory(u, server=hostile_server()) for u in (victim, other)}
    markers = {u.name: new_marker('sgh') for u in (victim, other)}
    hostile, shown = {}, {}
    for u in (victim, other):
        hostile[u.name], shown[u.name] = start_hostile(sessions[u.name], markers[u.name])
    server_shown = 'sgsrv\\u202e\\x1b[1m\\xe9 new'

    # session_facts, every user, SSH logins too: succeeds, and shows every hostile name escaped.
    facts = target.run('session_facts', {'include_ssh': True})
    assert not facts.get('failed'), facts.get('msg', facts)
    assert unsafe_strings(facts) == []
    for u in (victim, other):
        entry = mosh_entry(facts, u.uid)
        assert entry['server_pid'] == sessions[u.name].server.pid
        assert entry['cmdline'].startswith(server_shown), entry['cmdline']
        assert entry['renamed'] is True
        cmdlines = [p['cmdline'] for p in entry['processes']]
        for kind, text in shown[u.name].items():
            assert any(c.startswith(text) for c in cmdlines), (kind, text, cmdlines)

    # revoke_sessions on the victim: succeeds, names and counts the hostile processes, and they are gone.
    result = target.run('revoke_sessions', {'users': [victim.name]})
    assert_ok(result, target)
    assert unsafe_strings(result) == []
    signals = ended(result)
    assert set(p.pid for p in hostile[victim.name].values()) <= set(signals)
    [mosh] = [s for s in result['sessions'] if s['kind'] == 'mosh']
    assert mosh['leader_pid'] == sessions[victim.name].server.pid
    assert mosh['process_count'] >= 2 + len(hostile[victim.name])
    cmdlines = [p['cmdline'] for p in mosh['processes']]
    assert any(c.startswith(server_shown) for c in cmdlines), cmdlines
    for kind, text in shown[victim.name].items():
        assert any(c.startswith(text) for c in cmdlines), (kind, text, cmdlines)
    assert result['totals']['processes'] >= mosh['process_count']
    assert sessions[victim.name].wait_client_exit() == 0
    assert not any(p.alive() for p in hostile[victim.name].values())
    assert victim.processes() == []
    # The other user's look-alikes are untouched.
    assert all(p.alive() for p in hostile[other.name].values())
    assert sessions[other.name].client_running() and sessions[other.name].server.alive()
    bystander.assert_untouched()

    # What an operator's terminal shows: the default callback in YAML, the registered results debugged.
    tasks = [
        {'name': 'Audit every session', 'sessionguard.mosh.session_facts': {'include_ssh': True}, 'register': 'facts'},
        {'name': 'Show the audit', 'ansible.builtin.debug': {'var': 'facts'}},
        {'name': 'Revoke', 'sessionguard.mosh.revoke_sessions': {'users': [other.name]}, 'register': 'revoked'},
        {'name': 'Show the revocation', 'ansible.builtin.debug': {'var': 'revoked'}},
    ]
    play = target.playbook(tasks, env={'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.default',
                                       'ANSIBLE_CALLBACK_RESULT_FORMAT': 'yaml'})
    assert play.rc == 0, play.describe()
    for raw in (play.stdout, play.stderr):
        c0 = sorted(set(b for b in raw if (b < 0x20 and b not in (0x09, 0x0a)) or b == 0x7f))
        assert c0 == [], 'raw C0 bytes %s in ansible-playbook output' % c0
        # Strict: a raw invalid byte (\xe9) fails here; then no C1, bidi or format character.
        assert UNSAFE.findall(raw.decode('utf-8')) == []
    text = play.stdout.decode('utf-8')
    # The hostile names were printed, escaped: the check above saw them.
    for needle in ('xe9vil', 'u202efdp.exe', 'x1b[31m', 'sgsrv'):
        assert needle in text, needle
    assert 'sgbidi-%s' % markers[other.name] in text and 'sgansi-%s' % markers[other.name] in text
    assert sessions[other.name].wait_client_exit() == 0
    assert not any(p.alive() for p in hostile[other.name].values())
    assert other.processes() == []
    bystander.assert_untouched()

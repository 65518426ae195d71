"""revoke_sessions at scale: thousands of processes, a tight descriptor limit, a bounded result.

Each revocation is a real ansible-playbook run on every target interpreter, once with the descriptor limit
the test process has and once under ``prlimit --nofile=1024:1024`` (the module process inherits soft and hard
limit 1024, so it cannot hold a pidfd for every process of the set).

- ``test_default_scope_ends_a_mosh_session_with_1100_nohup_jobs``: one mosh session whose shell started 1,100
  ``nohup sleep``s, revoked with the default scope.
- ``test_scope_all_ends_5000_processes_on_a_10000_process_machine``: a user with 5,000 processes (a mosh session,
  the leftovers of an ssh login, 28 live ssh logins, processes tied to no login), next to a crowd of another
  user's processes that brings the machine to 10,000 processes; revoked with ``scope: all``. The result holds
  exactly 30 sessions (the listed maximum, so every count is visible) of at least 10 processes; the ssh logins'
  jobs have 3,000-byte hostile command lines (non-ASCII, bidi override, ESC, invalid UTF-8).
- ``test_terminate_gracefully_waits_on_more_than_1024_pidfds``: 1,100 jobs that ignore SIGTERM, revoked with
  ``terminate_gracefully``: the module waits on more than 1,024 live pidfds (poll, never select); one target.
- ``test_result_stays_under_100_kb_with_the_widest_command_lines``: the same 30 x 10 listed processes, every
  command line made of characters outside the BMP (the most JSON bytes per character); one target.

Shared across parametrizations: the bystander and the crowd (module scope, checked after every run). Every
revocation gets its own user and processes. With ``-s`` each run prints a ``[scale]`` line: run time, counts,
result size, peak descriptors of the module process, and the test's phases.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time

import pytest

from sgtest import procfs
from sgtest.users import OWNER_TAG, owner_alive, owner_tag
from sgtest.waiting import wait_for

pytestmark = pytest.mark.live

NOHUP_JOBS = 1100
USER_PROCESSES = 5000
MACHINE_PROCESSES = 10000
CROWD = MACHINE_PROCESSES - USER_PROCESSES
# scope all: 1 mosh session + LIVE_LOGINS ssh sessions + the 'other' bucket = 30, what a result lists.
LIVE_LOGINS = 28
JOBS_PER_LOGIN = 10
MOSH_JOBS = 1000
ENDED_LOGIN_JOBS = 300
RESULT_MAX_BYTES = 100 * 1000
TIGHT_NOFILE = 1024
SLEEP = 'sleep 100000 </dev/null >/dev/null 2>&1'
# A command line a user controls: 3,000 bytes of non-ASCII, bidi override, ESC and invalid UTF-8.
HOSTILE_ARGV0 = r'''A="sg-scale-$(printf '\303\251\342\200\256\033\377%.0s' $(seq 600))"'''
# The costliest command line for a JSON result: 800 characters outside the BMP (U+1F600), 12 bytes each
# once json.dumps escapes them as surrogate pairs.
WIDEST_ARGV0 = r'''A="$(printf '\360\237\230\200%.0s' $(seq 800))"'''


# --------------------------------------------------------------------------- helpers

def live_pids(uid):
    """PIDs of the live (non-zombie) processes whose /proc entry ``uid`` owns: one stat(2) per process, and
    ``stat`` read only for the UID's. Cheap enough to poll with 10,000 processes on the machine."""
    out = set()
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            if os.stat('/proc/' + name).st_uid != uid:
                continue
            with open('/proc/%s/stat' % name) as fh:
                state = fh.read().rsplit(')', 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ('Z', 'X'):
            out.add(int(name))
    return out


def live_count(uid):
    return len(live_pids(uid))


def settled_pids(uid, quiet=0.3, timeout=30):
    """``live_pids(uid)`` once two reads ``quiet`` seconds apart agree."""
    last = [None]

    def same():
        now = live_pids(uid)
        if now == last[0]:
            return now
        last[0] = now
        time.sleep(quiet)
        return None

    return wait_for(same, timeout, 'processes of UID %d to settle' % uid)


def machine_count():
    return len(procfs.all_pids())


def other_runs_uids():
    """UIDs of the users of *other* live sgtest runs on this machine (GECOS ``sgtest owner PID/START`` of
    another process): their own revocations may hold their processes at any moment."""
    mine = owner_tag()
    out = set()
    with open('/etc/passwd') as fh:
        for line in fh:
            f = line.split(':')
            if len(f) > 4 and f[4].startswith(OWNER_TAG) and f[4] != mine and owner_alive(f[4]):
                out.add(int(f[2]))
    return out


def held_keys():
    """Processes on the machine that cannot run (stopped, or in a frozen cgroup), by (pid, start time)."""
    return dict((p.key(), p) for p in procfs.held_procs())


def assert_nothing_newly_held(before):
    """No process on the machine is stopped or frozen that was not before the run. Processes of other
    concurrent sgtest runs' users are left out: their own revocations freeze them."""
    others = other_runs_uids()
    new = [p for k, p in held_keys().items() if k not in before and p.uid not in others]
    assert new == [], 'left stopped or frozen: %s' % '; '.join(str(p) for p in new)


def wait_count(uid, n, timeout, what):
    return wait_for(lambda: live_count(uid) == n, timeout,
                    lambda: '%s: %d processes of UID %d (want %d)' % (what, live_count(uid), uid, n), interval=0.1)


def spawn_loose(user, n, argv0='A=sleep'):
    """Start ``n`` sleeps of ``user`` tied to no login, each with argv[0] ``$A`` as the shell snippet ``argv0``
    sets it: setpriv from root, in a new session. Returns the spawning shell (wait for it: it exits once all
    run, and they are reparented to PID 1)."""
    script = argv0 + '; for i in $(seq %d); do (exec -a "$A" %s) & done' % (n, SLEEP)
    return subprocess.Popen(['setpriv', '--reuid=%d' % user.uid, '--regid=%d' % user.gid, '--clear-groups',
                             'bash', '-c', script], start_new_session=True, cwd='/',
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_logins(clients, sshd, user, n, argv0):
    """``n`` live ssh logins of ``user``, each a shell waiting on JOBS_PER_LOGIN sleeps with argv[0] ``$A``."""
    command = argv0 + '; for i in $(seq %d); do (exec -a "$A" %s) & done; wait' % (JOBS_PER_LOGIN, SLEEP)
    for _i in range(n):
        clients.append(subprocess.Popen(sshd.ssh_argv(user, command), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def sshd_connections(user):
    """The root-owned per-connection sshd of each live ssh login of ``user`` (``sshd: NAME [priv]``)."""
    title = ('sshd: %s [priv]' % user.name).encode()
    out = []
    for pid in live_pids(0):
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as fh:
                if fh.read().split(b'\0')[0] != title:
                    continue
        except OSError:
            continue
        p = procfs.read_proc(pid)
        if p is not None and p.uid == 0:
            out.append(p)
    return out


class ModuleProbe(threading.Thread):
    """Watches this test process's revoke_sessions module process while it runs: its RLIMIT_NOFILE and the
    most descriptors it held at once. Walks only this process's own descendants (children files)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.limits = {}     # pid -> (soft, hard)
        self.peak_fds = 0

    def _descendants(self):
        todo, out = [os.getpid()], []
        while todo:
            pid = todo.pop()
            try:
                tids = os.listdir('/proc/%d/task' % pid)
            except OSError:
                continue
            for tid in tids:
                try:
                    with open('/proc/%d/task/%s/children' % (pid, tid)) as fh:
                        kids = [int(x) for x in fh.read().split()]
                except OSError:
                    continue
                out += kids
                todo += kids
        return out

    def _look(self, pid):
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as fh:
                if b'AnsiballZ_revoke_sessions' not in fh.read():
                    return
            if pid not in self.limits:
                with open('/proc/%d/limits' % pid) as fh:
                    line = next(ln for ln in fh if ln.startswith('Max open files'))
                self.limits[pid] = tuple(int(x) for x in line.split()[3:5])
            self.peak_fds = max(self.peak_fds, len(os.listdir('/proc/%d/fd' % pid)))
        except (OSError, StopIteration, ValueError):
            pass

    def run(self):
        while not self.stop.is_set():
            for pid in self._descendants():
                self._look(pid)
            self.stop.wait(0.05)


def revoke(target, args, nofile):
    """One real run; with ``nofile`` also proves the module process ran with that soft and hard limit."""
    probe = ModuleProbe()
    probe.start()
    start = time.monotonic()
    try:
        result = target.run('revoke_sessions', args, nofile=nofile)
    finally:
        probe.stop.set()
        probe.join(10)
    result['_seconds'] = time.monotonic() - start
    result['_probe'] = probe
    if nofile:
        assert probe.limits, 'never saw the module process'
        assert set(probe.limits.values()) == {(nofile, nofile)}, probe.limits
    return result


def assert_done(result, target):
    assert not result.get('failed'), result.get('msg', result)
    assert result['process_reader'] == target.reader
    assert result['changed'] is True
    assert 'aborted' not in result, result['aborted']
    assert result['survivors'] == [] and result['survivor_count'] == 0
    assert result['errors'] == []


def assert_counts_add_up(result, expected, signals_as_planned=True):
    """Every count accounts for every process: per session, over the sessions, and against ``expected``.
    Returns the signal counts over all sessions."""
    sessions, totals = result['sessions'], result['totals']
    assert result['sessions_truncated'] is False and totals['sessions'] == len(sessions)
    signals = {}
    for s in sessions:
        assert sum(s['signals'].values()) == s['process_count'], s
        # At most 10 listed; fewer only when the byte budget trimmed the lists, and then it says so.
        assert 1 <= len(s['processes']) <= min(10, s['process_count']), s
        assert s['processes_truncated'] is (len(s['processes']) < s['process_count']), s
        for name, n in s['signals'].items():
            signals[name] = signals.get(name, 0) + n
    assert totals['signals'] == signals
    assert sum(s['process_count'] for s in sessions) == totals['processes'] == expected
    # The mosh servers get SIGTERM (before their frozen sessions die, so they tell their clients); everything
    # else is killed while frozen: nothing 'exited' on its own, nothing left without a signal.
    servers = sum(1 for s in sessions if s['kind'] == 'mosh')
    if signals_as_planned:
        assert signals == dict((k, n) for k, n in (('SIGTERM', servers), ('SIGKILL', expected - servers)) if n), signals
    return signals


def result_size(result):
    return len(json.dumps(dict((k, v) for k, v in result.items() if not k.startswith('_'))))


class Phases(object):
    """Seconds spent in each named phase of a test, for the report line."""

    def __init__(self):
        self.marks, self.last = [], time.monotonic()

    def __call__(self, name):
        now = time.monotonic()
        self.marks.append((name, now - self.last))
        self.last = now

    def __str__(self):
        return '[%s]' % ', '.join('%s %.1fs' % m for m in self.marks)


def report(what, target, nofile, result, **extra):
    """One ``[scale]`` line per run (shown with -s), printed before the run is judged."""
    totals = result.get('totals') or {}
    mosh = [s['signals'] for s in result.get('sessions', ()) if s['kind'] == 'mosh']
    print('\n[scale] %s %s nofile=%s: revoke %.1fs, %s processes, %s sessions, result %d bytes, freezer %s, '
          'module fds peak %d, mosh sessions %s%s' % (
              what, target.name, nofile or 'default', result['_seconds'], totals.get('processes'),
              totals.get('sessions'), result_size(result), result.get('freezer'), result['_probe'].peak_fds,
              mosh, ''.join(', %s %s' % kv for kv in extra.items())))


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(params=[None, TIGHT_NOFILE], ids=['nofile-default', 'nofile-%d' % TIGHT_NOFILE])
def nofile(request):
    return request.param


@pytest.fixture(scope='module')
def capacity():
    """Refuse to start thousands of processes where the machine cannot hold them."""
    need = machine_count() + MACHINE_PROCESSES + 2000
    with open('/proc/sys/kernel/pid_max') as fh:
        pid_max = int(fh.read())
    with open('/proc/sys/kernel/threads-max') as fh:
        threads_max = int(fh.read())
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    problems = [n for n, v in (('pid_max', pid_max), ('threads-max', threads_max), ('ulimit -u', nproc))
                if v != resource.RLIM_INFINITY and v < need]
    assert not problems, 'the machine cannot hold %d processes: %s' % (need, problems)


@pytest.fixture(scope='module')
def crowd(capacity, module_user_factory):
    """CROWD processes of another user, alive for the whole module: with a revoked user's 5,000 the
    machine holds 10,000. Checked untouched (and not held) after every run."""
    user = module_user_factory(prefix='sgc')
    assert spawn_loose(user, CROWD).wait(120) == 0
    wait_count(user.uid, CROWD, 120, 'crowd')
    procs = user.processes()
    assert len(procs) == CROWD
    return procs


def assert_crowd_untouched(crowd):
    gone = [p for p in crowd if not p.alive()]
    assert not gone, '%d crowd processes gone, e.g. %s' % (len(gone), gone[0])


@pytest.fixture
def ssh_clients():
    """Root-owned ssh clients a test starts; reaped (killed if still running) at teardown."""
    clients = []
    yield clients
    for c in clients:
        if c.poll() is None:
            c.kill()
        c.wait(30)


# --------------------------------------------------------------------------- tests

def test_default_scope_ends_a_mosh_session_with_1100_nohup_jobs(target, nofile, capacity, user_factory,
                                                                mosh_session_factory, module_bystander):
    user = user_factory()
    session = mosh_session_factory(user)
    session.send('for i in $(seq %d); do nohup sleep 100000 >/dev/null 2>&1 & done' % NOHUP_JOBS)
    wait_count(user.uid, NOHUP_JOBS + 2, 60, 'nohup jobs')  # + mosh-server and the shell
    before = user.settled_processes(quiet=0.3)
    assert sum(1 for p in before if p.comm == 'sleep') == NOHUP_JOBS
    held = held_keys()

    result = revoke(target, {'users': [user.name]}, nofile)
    report('mosh 1100 nohup', target, nofile, result)

    assert_done(result, target)
    assert user.processes() == []
    assert session.wait_client_exit() == 0
    assert '[mosh is exiting.]' in session.screen(history=True)
    assert_nothing_newly_held(held)
    [entry] = result['sessions']
    assert entry['kind'] == 'mosh' and entry['leader_pid'] == session.server_pid
    assert entry['processes'][0]['pid'] == session.server_pid
    assert_counts_add_up(result, len(before))
    assert set(p['pid'] for p in entry['processes']) <= set(p.pid for p in before)
    assert result_size(result) < RESULT_MAX_BYTES
    module_bystander.assert_untouched()


def test_scope_all_ends_5000_processes_on_a_10000_process_machine(target, nofile, crowd, user_factory,
                                                                  mosh_session_factory, ssh_clients, sshd,
                                                                  module_bystander):
    user = user_factory()
    phases = Phases()
    # Started together, waited for together: 28 live ssh logins (each a shell waiting on 10 jobs with hostile
    # command lines: what the result lists), an ssh login that leaves nohup jobs behind and ends, and jobs
    # tied to no login.
    start_logins(ssh_clients, sshd, user, LIVE_LOGINS, HOSTILE_ARGV0)
    leave = 'for i in $(seq %d); do nohup %s & done' % (ENDED_LOGIN_JOBS, SLEEP)
    ended = subprocess.Popen(sshd.ssh_argv(user, leave), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ssh_clients.append(ended)
    per_login = JOBS_PER_LOGIN + 2  # + the user's sshd (sshd: NAME@notty) and the shell
    loose = USER_PROCESSES - LIVE_LOGINS * per_login - ENDED_LOGIN_JOBS - (MOSH_JOBS + 2)
    spawner = spawn_loose(user, loose)
    # A mosh session with jobs of its own.
    session = mosh_session_factory(user)
    session.send('for i in $(seq %d); do nohup sleep 100000 >/dev/null 2>&1 & done' % MOSH_JOBS)
    assert spawner.wait(120) == 0 and ended.wait(120) == 0
    wait_count(user.uid, USER_PROCESSES, 120, 'the user\'s processes')
    phases('started')
    before = settled_pids(user.uid)
    phases('settled')
    conns = sshd_connections(user)
    assert len(before) == USER_PROCESSES and len(conns) == LIVE_LOGINS
    machine = machine_count()
    assert machine >= MACHINE_PROCESSES
    held = held_keys()
    phases('conns, held')

    result = revoke(target, {'users': [user.name], 'scope': 'all'}, nofile)
    phases('revoke')
    report('scope all 5000', target, nofile, result, machine=machine, phases=phases)

    assert_done(result, target)
    assert user.processes() == []
    assert session.wait_client_exit() == 0
    for c in ssh_clients[:LIVE_LOGINS]:
        assert c.wait(30) is not None
    assert not any(c.alive() for c in conns)
    assert_nothing_newly_held(held)
    kinds = [s['kind'] for s in result['sessions']]
    assert sorted(set(kinds)) == ['mosh', 'other', 'ssh'] and kinds.count('ssh') == LIVE_LOGINS
    # Every process of the user, and the per-connection sshd of each of its live logins.
    assert_counts_add_up(result, len(before) + len(conns))
    listed = set(p['pid'] for s in result['sessions'] for p in s['processes'])
    assert listed <= before | set(c.pid for c in conns)
    size = result_size(result)
    assert size < RESULT_MAX_BYTES, 'result is %d bytes' % size
    assert_crowd_untouched(crowd)
    module_bystander.assert_untouched()


def test_terminate_gracefully_waits_on_more_than_1024_pidfds(default_target, user_factory, mosh_session_factory,
                                                             module_bystander):
    """terminate_gracefully: every process gets SIGTERM and the grace period. 1,100 jobs that ignore SIGTERM keep
    more than 1,024 pidfds open and alive while the module waits - poll(2) watches them, select(2) cannot
    (descriptors numbered 1024 and up). One target: the waiting is the same code on every interpreter."""
    user = user_factory()
    session = mosh_session_factory(user)
    # SIG_IGN survives exec: each sleep ignores SIGTERM, and the SIGHUP its shell passes on at the hangup.
    session.send("for i in $(seq %d); do (trap '' TERM HUP; exec %s) & done" % (NOHUP_JOBS, SLEEP))
    wait_count(user.uid, NOHUP_JOBS + 2, 60, 'jobs')
    before = user.settled_processes(quiet=0.3)
    held = held_keys()

    result = revoke(default_target, {'users': [user.name], 'terminate_gracefully': True, 'grace_period': 1}, None)
    report('graceful 1100 TERM-proof', default_target, None, result)

    assert_done(result, default_target)
    assert result['_probe'].peak_fds > 1024
    assert user.processes() == []
    assert session.wait_client_exit() == 0
    assert '[mosh is exiting.]' in session.screen(history=True)
    assert_nothing_newly_held(held)
    # SIGTERM for all, then SIGKILL for what ignored it: every job. The server ends on SIGTERM; the interactive
    # shell ignores it and ends at the hangup, or by SIGKILL.
    signals = assert_counts_add_up(result, len(before), signals_as_planned=False)
    assert set(signals) <= {'SIGTERM', 'SIGKILL'} and signals['SIGKILL'] >= NOHUP_JOBS, signals
    module_bystander.assert_untouched()


def test_result_stays_under_100_kb_with_the_widest_command_lines(default_target, user_factory, ssh_clients, sshd,
                                                                 module_bystander):
    """The listed maximum - 30 sessions of 10 listed processes - where every process a user can name has the
    command line that costs the most bytes in JSON. The bound is on what the result carries, whatever the
    user typed. One target: the result is built by the same code on every interpreter."""
    user = user_factory()
    start_logins(ssh_clients, sshd, user, LIVE_LOGINS + 1, WIDEST_ARGV0)
    assert spawn_loose(user, JOBS_PER_LOGIN, WIDEST_ARGV0).wait(60) == 0
    count = (LIVE_LOGINS + 1) * (JOBS_PER_LOGIN + 2) + JOBS_PER_LOGIN
    wait_count(user.uid, count, 60, 'the user\'s processes')
    before = settled_pids(user.uid)
    conns = sshd_connections(user)
    assert len(before) == count and len(conns) == LIVE_LOGINS + 1

    result = revoke(default_target, {'users': [user.name], 'scope': 'all'}, None)
    report('widest command lines', default_target, None, result)

    assert_done(result, default_target)
    assert user.processes() == []
    for c in ssh_clients:
        assert c.wait(30) is not None
    assert len(result['sessions']) == 30
    assert_counts_add_up(result, len(before) + len(conns))
    module_bystander.assert_untouched()
    size = result_size(result)
    assert size < RESULT_MAX_BYTES, 'result is %d bytes' % size

"""The termination engine on real processes: fault injection, signals to the module, a killed module.

These drive ``Engine`` directly (needs root for cgroup v2), with real child processes as the set, and check the
machine's real state afterwards: nothing of the set alive, nothing left stopped, no frozen group left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils import _freeze, _procfs, _terminate
from sgtest.waiting import wait_for

FREEZERS = {'cgroup': True, 'sigstop': False}


def spawn(n):
    """``n`` sleeping children in their own session (so killing a process group of ours never reaches them)."""
    return [subprocess.Popen(['sleep', '100000'], start_new_session=True) for _i in range(n)]


def procs_of(children):
    snap = _procfs.Snapshot(_procfs.ProcfsReader(), pids=[c.pid for c in children])
    return [snap.get(c.pid) for c in children]


def stopped(pids):
    return [pid for pid in pids if _procfs.read_state(pid) in ('T', 't')]


def sessionguard_groups(pid):
    """The frozen groups a run in process ``pid`` made (named after it, so other runs on the machine don't count)."""
    mount = _freeze.cgroup2_mount()
    return [d for d in os.listdir(mount) if d.startswith('sessionguard-%d-' % pid)] if mount else []


def reap(children, timeout=10):
    for c in children:
        try:
            c.wait(timeout)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
    return [c.returncode for c in children]


@pytest.fixture(autouse=True)
def no_leftover_groups():
    yield
    assert sessionguard_groups(os.getpid()) == [], 'frozen groups left behind'


@pytest.mark.parametrize('freezer', sorted(FREEZERS))
def test_a_rescan_that_raises_after_the_freeze_still_finishes_the_job(freezer):
    victims = spawn(30)
    bystander = spawn(1)
    calls = []

    def rescan():
        calls.append(1)
        raise RuntimeError('injected rescan failure')

    engine = _terminate.Engine(1, rescan, prefer_cgroup=FREEZERS[freezer], watchdog=False)
    # With a notice to show, the engine scans for late forks between the freeze and the notice (the catch-up).
    engine.run(procs_of(victims), notify=lambda: None)

    assert calls, 'the rescan never ran'
    assert engine.freezer.name == freezer
    assert engine.aborted['stage'] == 'catch-up'
    assert 'injected rescan failure' in engine.aborted['error']
    assert sorted(engine.aborted['killed']) == sorted(c.pid for c in victims)
    assert engine.aborted['thawed'] == []
    assert reap(victims) == [-signal.SIGKILL] * len(victims)
    # The process that was never part of the set is untouched and not stopped.
    assert bystander[0].poll() is None and stopped([bystander[0].pid]) == []
    bystander[0].kill()
    reap(bystander)


@pytest.mark.parametrize('freezer', sorted(FREEZERS))
def test_a_notice_that_raises_kills_the_servers_too(freezer):
    victims = spawn(5)
    procs = procs_of(victims)
    graceful = set([procs[0].identity()])

    def notify():
        raise OSError(5, 'injected notice failure')

    engine = _terminate.Engine(5, lambda: [], prefer_cgroup=FREEZERS[freezer], watchdog=False)
    engine.run(procs, graceful=graceful, notify=notify)

    assert engine.aborted['stage'] == 'notice'
    assert reap(victims) == [-signal.SIGKILL] * len(victims)
    assert stopped(c.pid for c in victims) == []


def test_the_graceful_processes_get_sigterm_the_rest_sigkill_while_frozen():
    victims = spawn(4)
    procs = procs_of(victims)
    seen_during_notice = {}

    def notify():
        # Only the graceful process runs while the notice is shown; the rest stays frozen.
        for group in ('grace', 'kill'):
            with open(engine.freezer.path(group, 'cgroup.events')) as f:
                seen_during_notice[group] = 'frozen 1' in f.read()
            with open(engine.freezer.path(group, 'cgroup.procs')) as f:
                seen_during_notice[group + ' pids'] = sorted(int(x) for x in f.read().split())

    engine = _terminate.Engine(2, lambda: [], watchdog=False)
    handles = engine.run(procs, graceful=set([procs[0].identity()]), notify=notify)

    assert engine.aborted is None and engine.survivors == []
    by_pid = dict((h.pid, h.ended_by) for h in handles)
    assert by_pid[victims[0].pid] == 'SIGTERM'
    assert set(by_pid[c.pid] for c in victims[1:]) == {'SIGKILL'}
    assert reap(victims) == [-signal.SIGTERM] + [-signal.SIGKILL] * 3
    assert seen_during_notice == {'grace': False, 'grace pids': [victims[0].pid],
                                  'kill': True, 'kill pids': sorted(c.pid for c in victims[1:])}


MODULE = textwrap.dedent('''
    import json, os, sys, time
    from ansible_collections.sessionguard.mosh.plugins.module_utils import _procfs, _terminate
    pids = [int(p) for p in sys.argv[1].split(',')]
    snap = _procfs.Snapshot(_procfs.ProcfsReader(), pids=pids)
    def notify():
        print('frozen', flush=True)
        time.sleep(600)
    engine = _terminate.Engine(1, lambda: [], watchdog=True)
    engine.run([snap.get(p) for p in pids], notify=notify)
    print(json.dumps(engine.aborted), flush=True)
''')


def run_module(victims):
    env = dict(os.environ, PYTHONPATH=os.environ.get('ANSIBLE_COLLECTIONS_PATH', ''))
    module = subprocess.Popen([sys.executable, '-c', MODULE, ','.join(str(c.pid) for c in victims)],
                              stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert module.stdout.readline().strip() == 'frozen'
    assert all(_procfs.read_state(c.pid) in ('S', 'T') for c in victims)
    return module


def test_sigterm_to_the_module_finishes_the_job_and_reports_it():
    victims = spawn(10)
    module = run_module(victims)

    module.send_signal(signal.SIGTERM)
    aborted = json.loads(module.stdout.readline())
    module.wait(10)

    assert aborted['stage'] == 'notice' and 'signal %d' % signal.SIGTERM in aborted['error']
    assert sorted(aborted['killed']) == sorted(c.pid for c in victims)
    assert reap(victims) == [-signal.SIGKILL] * len(victims)


def test_a_module_killed_outright_leaves_nothing_frozen_the_watchdog_finishes():
    """An async timeout SIGKILLs the module's process group: no handler runs, the watchdog does the job."""
    victims = spawn(10)
    module = run_module(victims)
    assert sessionguard_groups(module.pid), 'the run made no frozen group'

    os.killpg(module.pid, signal.SIGKILL)
    module.wait(10)

    assert reap(victims) == [-signal.SIGKILL] * len(victims)
    wait_for(lambda: not sessionguard_groups(module.pid), 10, 'the watchdog to remove the frozen groups')


def test_more_processes_than_descriptors_are_all_addressed():
    """Past the descriptor budget processes are addressed by start time: none is taken for gone."""
    victims = spawn(300)
    code = textwrap.dedent('''
        import resource, sys, json
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
        from ansible_collections.sessionguard.mosh.plugins.module_utils import _procfs, _terminate
        pids = [int(p) for p in sys.argv[1].split(',')]
        snap = _procfs.Snapshot(_procfs.ProcfsReader(), pids=pids)
        engine = _terminate.Engine(1, lambda: [], watchdog=False)
        handles = engine.run([snap.get(p) for p in pids])
        print(json.dumps({'pidfds': sum(1 for h in handles if h.signals), 'survivors': len(engine.survivors),
                          'aborted': engine.aborted, 'ended': sorted(set(h.ended_by for h in handles))}))
    ''')
    env = dict(os.environ, PYTHONPATH=os.environ.get('ANSIBLE_COLLECTIONS_PATH', ''))
    out = subprocess.run([sys.executable, '-c', code, ','.join(str(c.pid) for c in victims)], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out)
    assert result['aborted'] is None and result['survivors'] == 0, result
    assert result['ended'] == ['SIGKILL'], result
    assert reap(victims) == [-signal.SIGKILL] * len(victims)


def spawn_at(pid, tries=300):
    """A sleeping child whose PID is ``pid`` (free by now): the kernel hands out ns_last_pid + 1 next, so set it
    and fork, again if another process on the machine forked in between."""
    for _i in range(tries):
        with open('/proc/sys/kernel/ns_last_pid', 'w') as fh:
            fh.write(str(pid - 1))
        child = subprocess.Popen(['sleep', '100000'], start_new_session=True)
        if child.pid == pid:
            return child
        child.kill()
        child.wait()
    pytest.fail('could not get PID %d back in %d forks' % (pid, tries))
    return None


@pytest.mark.parametrize('pidfd', [True, False], ids=['pidfd', 'start-time'])
def test_a_handle_never_signals_a_process_that_took_over_its_pid(pidfd):
    """The set was scanned, the process died, and another took its PID before the kill: the handle says gone
    and signals nothing. With a pidfd the kernel guarantees it; without one (past the descriptor budget) the
    start time read before each signal does."""
    [old] = spawn(1)
    [proc] = procs_of([old])
    handle = _terminate.Handle(proc, pidfd=pidfd)
    assert (handle.fd is not None) is pidfd and not handle.gone
    old.kill()
    old.wait()
    time.sleep(0.05)   # start times count clock ticks (10 ms): the newcomer must not share the old one's
    new = spawn_at(old.pid)
    try:
        assert _procfs.read_start_ticks(new.pid) != proc.start_ticks
        assert handle.send(signal.SIGKILL) is False
        assert handle.gone and handle.signals == [] and not handle.alive()
        assert new.poll() is None and _procfs.read_state(new.pid) in ('R', 'S')
    finally:
        handle.close()
        new.kill()
        new.wait()

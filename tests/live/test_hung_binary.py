"""A user's mosh-server whose binary lives on a FUSE mount that stops answering reads ("No hang").

Every access the modules make to a user's binary is bounded (3 s): a process whose binary hangs is
judged without it, flagged, and - by revoke_sessions - ended with the rest. The FUSE server is
tests/lib/sgtest/fuse.py; it answers lookups and getattr but blocks every read once told to hang.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from sgtest import procfs
from sgtest.escapees import start_escapees
from sgtest.fuse import HangingFuse
from test_revoke_sessions import assert_ok, ended

# The modules give any one access to a user's binary this long (IO_TIMEOUT in module_utils/_sessions.py).
IO_TIMEOUT = 3.0
# revoke_sessions waits this long for the frozen groups to settle; a task stuck in a page fault never freezes.
SETTLE = 2.0
GRACE = 5
# A run that hangs is cut off here, so a regression fails instead of stalling the suite.
RUN_TIMEOUT = 150
# The budgets are set against the same user's audit before the hang, which sets the pace of this host: a
# scan of /proc takes seconds when other tests keep thousands of processes around, and a revocation scans
# several times. On top of that a hung binary may add its bounded waits, plus SLACK. Typical runs on a quiet
# host: 2 s before the hang, 5 s hung, 12 s for the revocation (grace included).
SLACK = 20.0


@pytest.fixture
def hanging_fuse(sg_harness, sg_scope):
    """A :class:`sgtest.fuse.HangingFuse` with a copy of mosh-server, mounted under the harness state dir
    (reachable by test users). Depends on ``sg_scope`` so it is torn down first: the blocked reads are
    released and the mount is gone before the users' processes are killed and checked."""
    fuse = HangingFuse(sg_harness.state_dir).start()
    yield fuse
    fuse.stop()


def timed_run(target, module, args):
    start = time.monotonic()
    try:
        result = target.run(module, args, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail('%s hung: no result after %d s' % (module, RUN_TIMEOUT))
    return result, time.monotonic() - start


def test_a_server_whose_binary_hangs_is_flagged_and_ended_without_stalling(
        target, user_factory, mosh_session_factory, hanging_fuse, bystander):
    user = user_factory()
    hung = mosh_session_factory(user, server=hanging_fuse.path)
    normal = mosh_session_factory(user)
    escapees = start_escapees(normal, ('nohup',))
    escapees_hung = start_escapees(hung, ('nohup',))
    assert procfs.exe(hung.server.pid) == hanging_fuse.path
    assert procfs.exe(normal.server.pid) == '/usr/bin/mosh-server'
    before = user.settled_processes()

    def mosh_entries(facts):
        assert not facts.get('failed'), facts.get('msg', facts)
        return dict((e['server_pid'], e) for e in facts['ansible_facts']['sessionguard_sessions']
                    if e['uid'] == user.uid and e['kind'] == 'mosh')

    # Before the hang the copy on FUSE reads fine: flagged as a copy, not as unreadable.
    baseline, baseline_seconds = timed_run(target, 'session_facts', {'users': [user.name]})
    entries = mosh_entries(baseline)
    assert set(entries) == {hung.server.pid, normal.server.pid}, entries
    assert entries[hung.server.pid]['exe_unreadable'] is False and entries[hung.server.pid]['copied'] is True
    assert entries[normal.server.pid]['suspicious'] is False
    assert hanging_fuse.status()['reads'] > 0

    hanging_fuse.hang()

    # (a) The audit finishes, flags the hung server and still reports the normal session.
    facts, facts_seconds = timed_run(target, 'session_facts', {'users': [user.name]})
    entries = mosh_entries(facts)
    assert facts_seconds < 2 * baseline_seconds + IO_TIMEOUT + SLACK, \
        'session_facts took %.1f s (%.1f s before the hang)' % (facts_seconds, baseline_seconds)
    # The module really met the hang: a read of the binary reached the server and is still blocked there.
    status = hanging_fuse.status()
    assert status['ever_blocked'] >= 1 and status['blocked'] >= 1 and status['state'] == 'hang', status
    assert set(entries) == {hung.server.pid, normal.server.pid}, entries
    assert entries[hung.server.pid]['exe_unreadable'] is True
    assert entries[hung.server.pid]['suspicious'] is True
    assert entries[normal.server.pid]['exe_unreadable'] is False
    assert entries[normal.server.pid]['suspicious'] is False
    # Auditing ended nothing.
    assert all(p.alive() for p in before), [str(p) for p in before if not p.alive()]

    # (b) The revocation finishes, names the hung process and ends every process of the user, that one too.
    result, revoke_seconds = timed_run(target, 'revoke_sessions', {'users': [user.name], 'grace_period': GRACE})
    assert_ok(result, target)
    assert revoke_seconds < 4 * baseline_seconds + IO_TIMEOUT + SETTLE + GRACE + SLACK, \
        'revoke_sessions took %.1f s (session_facts %.1f s before the hang)' % (revoke_seconds, baseline_seconds)
    unreadable = dict((e['pid'], e['reason']) for e in result['unreadable'])
    assert hung.server.pid in unreadable, result['unreadable']
    assert normal.server.pid not in unreadable, result['unreadable']
    signals = ended(result)
    assert hung.server.pid in signals and normal.server.pid in signals, signals
    assert escapees['nohup'].pid in signals and escapees_hung['nohup'].pid in signals, signals
    # Real state: every process of the user is gone, the hung-binary server and its shell included.
    for proc in before:
        assert not proc.alive(), 'survived: %s' % proc
    assert user.processes() == []
    assert procfs.pids_of_uid(user.uid) == []
    # The normal server went the graceful way (SIGTERM, gone within the grace).
    # Whether its client then prints "[mosh is exiting.]" is not asserted: when mosh-server reads EOF from its
    # pty (the shell was killed) before the SIGTERM, it exits at the SIGTERM without telling its client.
    assert signals[normal.server.pid] in ('SIGTERM', 'exited'), result['sessions']
    bystander.assert_untouched()
    print('\n%s: session_facts %.1f s before the hang, %.1f s hung; revoke_sessions %.1f s (grace %d s); '
          'blocked reads %d; hung server ended by %s' % (target.name, baseline_seconds, facts_seconds, revoke_seconds,
                                                         GRACE, hanging_fuse.status()['ever_blocked'],
                                                         signals[hung.server.pid]))

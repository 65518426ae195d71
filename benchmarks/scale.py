"""How discovery, planning, rescans and the kill scale with the number of processes (run as root).

Usage:  ANSIBLE_COLLECTIONS_PATH=$(bash tests/tools/collection-path.sh) .venv/bin/python benchmarks/scale.py [--small]

Builds real process sets under an unused numeric UID and times the plugin code in-process:

  * ``wide``: N processes on the machine, half of them one user's, all tied to one session (one sid);
  * ``chain``: a fork chain D processes deep (each process the parent of the next);

each at two sizes (n and 2n), and prints the ratio 2n/n: about 2 means linear, about 4 quadratic. Baselines from
the same run: ``pgrep -u UID`` (what an operator runs today) and one ``stat()`` of every /proc/PID (the floor).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils import _procfs, _revoke, _sessions, _terminate

UID = 59998
OTHER_UID = 59997


def _spawn_as(uid, count, session=True):
    """``count`` sleeps of ``uid``, all in one new session; returns the session leader's Popen."""
    script = 'for i in $(seq %d); do sleep 100000 & done; exec sleep 100000' % (count - 1)
    return subprocess.Popen(['setpriv', '--reuid=%d' % uid, '--regid=%d' % uid, '--clear-groups', 'sh', '-c', script],
                            start_new_session=session)


def _chain(uid, depth):
    """A fork chain ``depth`` deep: each parent execs sleep after forking the next link."""
    code = ('import os\nfor i in range(%d):\n    if os.fork():\n        os.execvp("sleep", ["sleep", "100000"])\n'
            'os.execvp("sleep", ["sleep", "100000"])\n' % (depth - 1))
    return subprocess.Popen(['setpriv', '--reuid=%d' % uid, '--regid=%d' % uid, '--clear-groups', sys.executable,
                             '-c', code], start_new_session=True)


def _count(uid):
    n = 0
    for pid in os.listdir('/proc'):
        try:
            if pid.isdigit() and os.stat('/proc/' + pid).st_uid == uid:
                n += 1
        except OSError:
            pass
    return n


def _wait_count(uid, n, timeout=120):
    deadline = time.monotonic() + timeout
    while _count(uid) < n:
        if time.monotonic() > deadline:
            raise RuntimeError('only %d of %d processes of %d started' % (_count(uid), n, uid))
        time.sleep(0.2)


def _kill_uid(uid):
    _terminate.kill_all_of_uid(uid)
    deadline = time.monotonic() + 30
    while _count(uid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _timed(fn):
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def measure(uid):
    """Seconds for each stage on the current machine state, revoking ``uid`` with scope all."""
    reader = _procfs.make_reader(prefer_psutil=False)
    judge = _sessions.ExeJudge()
    exclude = _procfs.own_chain()
    out = {}

    def pgrep():
        subprocess.run(['pgrep', '-u', str(uid)], stdout=subprocess.DEVNULL, check=False)

    def rescan():
        return _revoke._tied_in(_procfs.Snapshot(reader, previous=snap), plan, [uid], 'all', False, exclude, judge)

    out['pgrep -u'] = _timed(pgrep)[0]
    out['stat every /proc/PID'] = _timed(lambda: _count(-1))[0]
    out['snapshot'], snap = _timed(lambda: _procfs.Snapshot(reader))
    out['discovery+plan'], plan = _timed(lambda: _revoke.Plan(snap, [uid], 'all', False, exclude, judge))
    out['rescan (reusing)'] = _timed(rescan)[0]
    procs = plan.procs
    out['session_of every process'] = _timed(lambda: [plan.session_of(p) for p in procs])[0]
    engine = _terminate.Engine(0, lambda: [], watchdog=False, chase=0)
    out['engine kill'] = _timed(lambda: engine.run(procs))[0]
    out['_planned'] = len(procs)
    out['_survivors'] = len(engine.survivors)
    return out


def scenario(name, build, sizes):
    rows = []
    for n in sizes:
        leaders = build(n)
        try:
            rows.append((n, measure(UID)))
        finally:
            _kill_uid(UID)
            _kill_uid(OTHER_UID)
            for p in leaders:
                p.wait()
    (n1, a), (n2, b) = rows
    print('\n== %s: n=%d vs 2n=%d (ratio ~2 linear, ~4 quadratic)' % (name, n1, n2))
    print('%-28s %10s %10s %7s' % ('stage', 'n (s)', '2n (s)', 'ratio'))
    for k in a:
        if k.startswith('_'):
            continue
        print('%-28s %10.3f %10.3f %7.2f' % (k, a[k], b[k], b[k] / a[k] if a[k] else float('nan')))
    print('planned %d / %d processes; survivors %d / %d'
          % (a['_planned'], b['_planned'], a['_survivors'], b['_survivors']))


def main():
    if os.geteuid() != 0:
        sys.exit('run as root')
    ap = argparse.ArgumentParser()
    ap.add_argument('--small', action='store_true', help='a quick run at a quarter of the sizes')
    args = ap.parse_args()
    k = 4 if args.small else 1
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def wide(n):
        # n processes on top of what runs already: half the user's (one session), half another user's.
        leaders = [_spawn_as(UID, n // 2), _spawn_as(OTHER_UID, n // 2)]
        _wait_count(UID, n // 2)
        _wait_count(OTHER_UID, n // 2)
        return leaders

    def chain(depth):
        leader = _chain(UID, depth)
        _wait_count(UID, depth)
        return [leader]

    scenario('wide: half of n processes are the user\'s, tied to one session', wide, (10000 // k, 20000 // k))
    scenario('chain: a fork chain n deep', chain, (4000 // k, 8000 // k))


if __name__ == '__main__':
    main()

"""How much the fleet report adds to the audit play: 20 hosts with 10 live mosh sessions each (run as root).

Usage:  ANSIBLE_COLLECTIONS_PATH=$(bash tests/tools/collection-path.sh) PYTHONPATH=$ANSIBLE_COLLECTIONS_PATH \\
        flock /tmp/sg-live.lock .venv/bin/python benchmarks/report.py [--hosts 20] [--sessions 10] [--runs 5]

Brings up a fleet (tests/fleet) of ``--hosts`` hosts, starts ``--sessions`` real mosh-server daemons per host for
one user, each through its own SSH login (``ssh user@host mosh-server new``: a daemon with its UDP socket, pty and
audit session, discovered as a session in state ``connecting``, as before a client attaches). A mosh-server that no
client reaches exits after 60 s, so each round starts a fresh set (all hosts at once) and runs the two plays right
after, inside that minute. Each round runs ``ansible-playbook sessionguard.mosh.audit`` over SSH once without the
report (``audit_report_dir=""``) and once with it, the order alternating from round to round; the output gives the
median wall-clock time of each, their difference (what writing sessions.json, sessions.csv and index.html costs on
top of the audit play) and how many sessions each report held.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'lib'))

from sgtest import ansible  # noqa: E402  pylint: disable=wrong-import-position
from sgtest.fleet import Fleet, new_state_dir  # noqa: E402  pylint: disable=wrong-import-position


def audit(fleet, report_dir):
    argv = [ansible.venv_bin('ansible-playbook'), 'sessionguard.mosh.audit', '-i', fleet.inventory_path,
            '-e', json.dumps({'audit_report_dir': report_dir})]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        cp = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=tmp, env=ansible.ansible_env())
        took = time.monotonic() - start
    if cp.returncode != 0:
        raise RuntimeError(cp.stdout[-3000:])
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--hosts', type=int, default=20)
    ap.add_argument('--sessions', type=int, default=10)
    ap.add_argument('--runs', type=int, default=5)
    args = ap.parse_args()
    fleet = Fleet(new_state_dir('bench'), kind='api')
    try:
        fleet.up(args.hosts, first=None)
        user = fleet.create_user()

        def start_sessions():
            def one(h):
                acct = user.on(h)
                for _i in range(args.sessions):
                    h.sshd.run_as(acct, 'LANG=C.UTF-8 mosh-server new -i %s >/dev/null 2>&1' % h.address)
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(fleet.hosts)) as pool:
                list(pool.map(one, fleet.hosts))

        out = tempfile.mkdtemp(prefix='sg-report-bench-')
        audit(fleet, '')  # warm up: connections, fact caches
        without, with_report, counts = [], [], []
        for i in range(args.runs):
            start_sessions()
            for with_it in ((False, True) if i % 2 == 0 else (True, False)):
                if with_it:
                    with_report.append(audit(fleet, out))
                    with open(os.path.join(out, 'sessions.json')) as fh:
                        report = json.load(fh)
                    counts.append(report['summary']['sessions'])
                else:
                    without.append(audit(fleet, ''))
        print('hosts=%d; live sessions in each report: %s (started per round: %d)'
              % (report['summary']['hosts_audited'], counts, args.hosts * args.sessions))
        print('audit play without report: median %.2f s %s' % (statistics.median(without), [round(t, 2) for t in without]))
        print('audit play with report:    median %.2f s %s' % (statistics.median(with_report), [round(t, 2) for t in with_report]))
        print('report adds: %.2f s (median difference)' % (statistics.median(with_report) - statistics.median(without)))
        # The same report built and written in-process, for the part of the difference that is the writer itself.
        from ansible_collections.sessionguard.mosh.plugins.module_utils import _fleetreport  # pylint: disable=import-outside-toplevel
        hosts = [{'name': n, 'status': 'audited', 'facts': {
            'sessionguard_sessions': [dict(s, cmdline=s['command']) for s in report['sessions'] if s['host'] == n],
            'sessionguard_history': {'logins': [e for e in report['history'] if e['host'] == n]}}}
            for n in report['hosts_audited']]
        start = time.monotonic()
        _fleetreport.write(_fleetreport.build(hosts, history_days=7), tempfile.mkdtemp(prefix='sg-report-bench-'))
        print('build + write in-process: %.3f s' % (time.monotonic() - start))
        print('files: %s' % ', '.join('%s %d bytes' % (n, os.path.getsize(os.path.join(out, n)))
                                      for n in ('sessions.json', 'sessions.csv', 'index.html')))
        for h in fleet.hosts:
            h.kill_all_as(user.on(h).uid, user.on(h).gid)
        user.destroy()
    finally:
        fleet.down()


if __name__ == '__main__':
    main()

"""How much the fleet report adds to the audit play: 20 hosts with 10 live mosh sessions each (run as root).

Usage:  flock /tmp/sg-live.lock .venv/bin/python benchmarks/report.py [--hosts 20] [--sessions 10] [--runs 3]

Brings up a fleet (tests/fleet) of ``--hosts`` hosts, starts ``--sessions`` real mosh-server daemons per host for
one user (``mosh-server new``, each with its UDP socket and pty: discovered as sessions in state ``connecting``),
then runs ``ansible-playbook sessionguard.mosh.audit`` over SSH ``--runs`` times without the report
(``audit_report_dir=""``) and as many times with it, alternating, and prints the median wall-clock time of each and
their difference: what writing sessions.json, sessions.csv and index.html costs on top of the audit play.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument('--runs', type=int, default=3)
    args = ap.parse_args()
    fleet = Fleet(new_state_dir('bench'), kind='api')
    try:
        fleet.up(args.hosts, first=None)
        user = fleet.create_user()
        for h in fleet.hosts:
            acct = user.on(h)
            for _i in range(args.sessions):
                h.run(['setpriv', '--reuid=%d' % acct.uid, '--regid=%d' % acct.gid, '--init-groups', '--', 'env',
                       'HOME=' + acct.home, 'LANG=C.UTF-8', 'mosh-server', 'new', '-i', h.address])
        out = tempfile.mkdtemp(prefix='sg-report-bench-')
        audit(fleet, '')  # warm up: connections, fact caches
        without, with_report = [], []
        for _i in range(args.runs):
            without.append(audit(fleet, ''))
            with_report.append(audit(fleet, out))
        with open(os.path.join(out, 'sessions.json')) as fh:
            report = json.load(fh)
        print('hosts=%d sessions in report=%d (mosh sessions started: %d)'
              % (report['summary']['hosts_audited'], report['summary']['sessions'], args.hosts * args.sessions))
        print('audit play without report: median %.2f s %s' % (statistics.median(without), [round(t, 2) for t in without]))
        print('audit play with report:    median %.2f s %s' % (statistics.median(with_report), [round(t, 2) for t in with_report]))
        print('report adds: %.2f s (median difference)' % (statistics.median(with_report) - statistics.median(without)))
        print('files: %s' % ', '.join('%s %d bytes' % (n, os.path.getsize(os.path.join(out, n)))
                                      for n in ('sessions.json', 'sessions.csv', 'index.html')))
        for h in fleet.hosts:
            h.kill_all_as(user.on(h).uid, user.on(h).gid)
        user.destroy()
    finally:
        fleet.down()


if __name__ == '__main__':
    main()

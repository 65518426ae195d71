"""Fleet time-to-dead on the namespaced test fleet (tests/fleet), beside the ad-hoc pkill with the same forks.

Run by benchmarks/run.py (``--only fleet``); as root. For each fleet size: a fleet of that many hosts is brought
up under the machine-wide lock (held for that size only, then the fleet is brought down), and in each round,
alternating, a fresh user gets ``SESSIONS`` real mosh sessions (through sshd, clients in tmux) on every host and
is then ended by

  * ``ansible-playbook sessionguard.mosh.revoke -e revoke_users=[USER]`` (door and kill, verify, summary), or
  * ``ansible fleet -b -m ansible.builtin.command -a 'pkill -KILL -u USER'``,

both with ``--forks`` forks and pipelining. Time-to-dead is watched from outside the hosts: from the start of the
command until no process of the user is left in any host's PID namespace (polled every 20 ms). Wall time is the
command's own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests', 'lib'))

from sgtest.ansible import ansible_env  # noqa: E402  pylint: disable=wrong-import-position
from sgtest.fleet import Fleet, new_state_dir  # noqa: E402  pylint: disable=wrong-import-position
from sgtest.interpreters import venv_bin  # noqa: E402  pylint: disable=wrong-import-position

SESSIONS = 5


class Watch(threading.Thread):
    """Polls /proc for processes of ``uids`` inside the PID namespaces ``ns``; ``dead`` is when none was left."""

    def __init__(self, uids, ns):
        super().__init__(daemon=True)
        self.uids, self.ns = set(uids), set(ns)
        self.start_time = time.monotonic()
        self.dead = None
        self.stop = False

    def count(self):
        n = 0
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                if os.stat('/proc/' + d).st_uid in self.uids and os.readlink('/proc/%s/ns/pid' % d) in self.ns:
                    n += 1
            except OSError:
                pass
        return n

    def run(self):
        while not self.stop:
            if self.count() == 0:
                self.dead = time.monotonic()
                return
            time.sleep(0.02)


def startup():
    """Seconds ``ansible-playbook sessionguard.mosh.revoke`` takes when no host matches: its fixed start-up cost."""
    argv = [venv_bin('ansible-playbook'), '-i', 'localhost,', 'sessionguard.mosh.revoke',
            '-e', json.dumps({'revoke_users': ['nobody'], 'sessionguard_hosts': 'no_such_host'})]
    t = time.monotonic()
    subprocess.run(argv, env=ansible_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.monotonic() - t


def open_sessions(scope, fleet, sessions):
    user = scope.user()
    started = []
    for host in fleet.hosts:
        for _i in range(sessions):
            started.append(scope.mosh(user, host, wait=False))
    for s in started:
        s.wait_connected(120)
    return user


def end(fleet, user, side, forks, pipelining=True):
    env = ansible_env({'ANSIBLE_FORKS': str(forks), 'ANSIBLE_PIPELINING': '1' if pipelining else '0'})
    if side == 'revoke':
        argv = [venv_bin('ansible-playbook'), '-i', fleet.inventory_path, 'sessionguard.mosh.revoke',
                '-e', json.dumps({'revoke_users': [user.name]})]
    else:
        argv = [venv_bin('ansible'), 'fleet', '-i', fleet.inventory_path, '-b', '-m', 'ansible.builtin.command',
                '-a', 'pkill -KILL -u %s' % user.name]
    uids = set(user.on(h).uid for h in fleet.hosts)
    watch = Watch(uids, [h.namespaces['pid'] for h in fleet.hosts])
    if watch.count() < 2 * SESSIONS * len(fleet.hosts):   # a server and a shell per session at least
        raise RuntimeError('sessions not all up: %d processes' % watch.count())
    t0 = time.monotonic()
    watch.start_time = t0
    watch.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the controller side (ansible and its ssh clients); the hosts' side runs in the namespaces.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    watch.join(120)
    watch.stop = True
    if r.returncode or watch.dead is None:
        raise RuntimeError('%s: rc %d, dead %s\n%s' % (side, r.returncode, watch.dead, r.stdout[-4000:]))
    return wall, watch.dead - t0, cpu


def measure(hosts, rounds, forks, series, lock, sides=('pkill', 'revoke'), sessions=SESSIONS):
    """Fleet of ``hosts``; ``rounds`` alternating runs of each side. Adds to ``series`` (see run.Series)."""
    with lock():
        fleet = Fleet(new_state_dir('bn'), kind='bench')
        t = time.monotonic()
        try:
            fleet.up(hosts, first=None, timeout=600)
            scope = fleet.scope('bench%d' % hosts)
            try:
                for r in range(rounds):
                    for side in (sides if r % 2 == 0 else tuple(reversed(sides))):
                        user = open_sessions(scope, fleet, sessions)
                        wall, dead, cpu = end(fleet, user, side, forks)
                        series.add(('fleet-%d' % hosts, side, 'wall'), wall)
                        series.add(('fleet-%d' % hosts, side, 'dead'), dead)
                        series.add(('fleet-%d' % hosts, side, 'cpu'), cpu)
                        print('fleet %d hosts, %s: wall %.1f s, time-to-dead %.1f s' % (hosts, side, wall, dead),
                              file=sys.stderr, flush=True)
            finally:
                scope.cleanup()
        finally:
            fleet.down(check=False)
        print('fleet %d hosts measured in %.0f s' % (hosts, time.monotonic() - t), file=sys.stderr, flush=True)

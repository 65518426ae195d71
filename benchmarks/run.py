"""All benchmarks of sessionguard.mosh, side by side with what operators run today. Run as root:

    ANSIBLE_COLLECTIONS_PATH=$(bash tests/tools/collection-path.sh) .venv/bin/python benchmarks/run.py

Each comparison runs both sides in the same run, alternating, ``--rounds`` times, and reports the median, the
spread (lowest-highest) and the ratio of medians; timings on a shared machine are noisy, ratios measured side by
side are what counts. ``--baseline REF`` adds the collection as of a git ref (``main``) as a third side.
``--write`` records the table, the machine, the command and the plot in docs/benchmarks.md.

  discovery  a crowded host (``--procs`` processes of 20 users, 100 mosh sessions): the in-process time to find
             one user's sessions and everything tied to them, against ``pgrep -u USER`` plus
             ``pgrep -x mosh-server`` on the same process table.
  module     ``ansible localhost -m sessionguard.mosh.revoke_sessions`` (scope all) against ``ansible localhost -m
             ansible.builtin.command -a 'pkill -KILL -u USER'`` for a user with 500 processes (no mosh-server),
             on that host; and the module process's peak memory.
  scaling    discovery at 1k, 5k, 10k and 20k paused processes (no mosh-server), beside pgrep.
  fleet      time-to-dead on the test fleet (tests/fleet): see benchmarks/fleet.py, which this runs.

Processes are made by crowd.c (compiled on the fly): paused children spread over dedicated numeric UIDs
(61000-61019, 61100) that no account has; everything of those UIDs is killed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CROWD_UIDS = list(range(61000, 61020))
VICTIM = CROWD_UIDS[0]      # the user whose sessions discovery looks for
MODULE_VICTIM = 61100       # the user with 500 processes the module and pkill end
MOSH_SESSIONS = 100
PYTHON = sys.executable
LOCK = '/tmp/sg-live.lock'


def sh(argv, **kw):
    return subprocess.run(argv, check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


class Work(object):
    """Scratch directory: the crowd binary, a collections path for the baseline, the memory wrapper."""

    def __init__(self, baseline):
        self.dir = tempfile.mkdtemp(prefix='sg-bench-')
        self.crowd = os.path.join(self.dir, 'crowd')
        subprocess.run(['gcc', '-O2', '-o', self.crowd, os.path.join(HERE, 'crowd.c')], check=True)
        self.sides = {'branch': os.environ.get('ANSIBLE_COLLECTIONS_PATH') or self._collections('HEAD', live=True)}
        if baseline:
            self.sides[baseline] = self._collections(baseline)
        self.rss_file = os.path.join(self.dir, 'maxrss')
        self.wrapper = os.path.join(self.dir, 'python-maxrss')
        with open(self.wrapper, 'w') as f:
            # The module's interpreter, wrapped: records the peak RSS of the module process (and its helpers).
            f.write('#!%s\nimport resource, subprocess, sys\nrc = subprocess.call([%r] + sys.argv[1:])\n'
                    'with open(%r, "a") as f:\n    f.write("%%d\\n" %% resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n'
                    'sys.exit(rc)\n' % (PYTHON, PYTHON, self.rss_file))
        os.chmod(self.wrapper, 0o755)

    def _collections(self, ref, live=False):
        root = os.path.join(self.dir, 'coll-' + ref.replace('/', '_'))
        dest = os.path.join(root, 'ansible_collections', 'sessionguard', 'mosh')
        os.makedirs(os.path.dirname(dest))
        if live:
            os.symlink(REPO, dest)
        else:
            os.makedirs(dest)
            archive = subprocess.run(['git', '-C', REPO, 'archive', ref], check=True, stdout=subprocess.PIPE).stdout
            subprocess.run(['tar', '-x', '-C', dest], input=archive, check=True)
        return root

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def crowd(work, count, uids):
    """``count`` paused processes spread over ``uids``; all gone on exit."""
    p = subprocess.Popen([work.crowd, str(count)] + [str(u) for u in uids], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, start_new_session=True)
    try:
        if p.stdout.readline().strip() != b'ready':
            raise RuntimeError('crowd did not start')
        yield p
    finally:
        p.stdin.close()
        p.wait()
        kill_uids(uids)


def kill_uids(uids):
    for uid in uids:
        sh(['pkill', '-KILL', '-u', str(uid)])
    deadline = time.monotonic() + 30
    while count_procs(uids) and time.monotonic() < deadline:
        time.sleep(0.1)


def count_procs(uids):
    want, n = set(uids), 0
    for d in os.listdir('/proc'):
        try:
            n += d.isdigit() and os.stat('/proc/' + d).st_uid in want
        except OSError:
            pass
    return n


def start_mosh_servers(n, uids):
    """``n`` real mosh-servers (no client: they wait up to 60 s for one), spread over ``uids``, on loopback."""
    for i in range(n):
        uid = uids[i % len(uids)]
        sh(['setpriv', '--reuid=%d' % uid, '--regid=%d' % uid, '--clear-groups', 'env', 'LANG=C.UTF-8', 'HOME=/tmp',
            'mosh-server', 'new', '-i', '127.0.0.1', '--', 'sleep', '100000'], cwd='/tmp', start_new_session=True)


def timed(argv, **kw):
    t = time.monotonic()
    r = sh(argv, **kw)
    return time.monotonic() - t, r


def probe(work, side, uid, reader):
    env = dict(os.environ, PYTHONPATH=work.sides[side])
    r = sh([PYTHON, os.path.join(HERE, '_probe.py'), str(uid), reader], env=env)
    if r.returncode:
        raise RuntimeError('probe failed: %s' % r.stderr[-2000:])
    return json.loads(r.stdout)


def pgrep_pair(uid):
    t = time.monotonic()
    sh(['pgrep', '-u', str(uid)])
    sh(['pgrep', '-x', 'mosh-server'])
    return time.monotonic() - t


class Series(object):
    def __init__(self):
        self.samples = {}

    def add(self, name, value):
        self.samples.setdefault(name, []).append(value)

    def median(self, name):
        return statistics.median(self.samples[name])

    def cell(self, name, unit='s'):
        v = self.samples[name]
        fmt = '%.2f' if unit == 's' else '%.0f'
        return (fmt + ' %s (%s-%s)') % (statistics.median(v), unit, fmt % min(v), fmt % max(v))


@contextlib.contextmanager
def live_lock():
    """The machine-wide lock of everything that starts mosh, sshd or fleets; held per measurement only."""
    with open(LOCK, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def bench_discovery(work, rounds, procs, series, label='discovery', sides=None, mosh=True):
    sides = sides or list(work.sides)
    lock = live_lock() if mosh else contextlib.nullcontext()
    with lock, crowd(work, procs - (MOSH_SESSIONS if mosh else 0), CROWD_UIDS):
        if mosh:
            start_mosh_servers(MOSH_SESSIONS, CROWD_UIDS)
        for _round in range(rounds):
            series.add((label, 'pgrep'), pgrep_pair(VICTIM))
            for side in sides:
                for reader in ('procfs', 'psutil'):
                    out = probe(work, side, VICTIM, reader)
                    series.add((label, side, reader), out['seconds'])
                    series.add((label, side, reader, 'planned'), out['planned'])
                    series.add((label, side, reader, 'table'), out['table'])
        kill_uids(CROWD_UIDS)


def ansible_localhost(work, side, module, args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=work.sides[side], ANSIBLE_PIPELINING='1',
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0')
    return timed([os.path.join(os.path.dirname(PYTHON), 'ansible'), 'localhost', '-m', module, '-a', args,
                  '-e', 'ansible_python_interpreter=%s' % work.wrapper], env=env)


def last_rss(work):
    with open(work.rss_file) as f:
        return int(f.read().split()[-1]) / 1024.0


def bench_module(work, rounds, procs, series):
    args = json.dumps({'users': [str(MODULE_VICTIM)], 'scope': 'all'})
    with crowd(work, procs - 500, CROWD_UIDS):
        for _round in range(rounds):
            for side in ['pkill'] + list(work.sides):
                with crowd(work, 500, [MODULE_VICTIM]):
                    if side == 'pkill':
                        secs, r = ansible_localhost(work, 'branch', 'ansible.builtin.command',
                                                    'pkill -KILL -u %d' % MODULE_VICTIM)
                    else:
                        secs, r = ansible_localhost(work, side, 'sessionguard.mosh.revoke_sessions', args)
                    left = count_procs([MODULE_VICTIM])
                    if r.returncode or left:
                        raise RuntimeError('%s: rc %d, %d processes left\n%s' % (side, r.returncode, left, r.stdout[-3000:]))
                    series.add(('module', side), secs)
                    if side != 'pkill':
                        series.add(('module', side, 'rss'), last_rss(work))


def bench_scaling(work, rounds, sizes, series):
    """Discovery at each size, beside pgrep; paused processes only (no mosh-server: no lock to wait for)."""
    for n in sizes:
        bench_discovery(work, rounds, n, series, label='scaling-%d' % n, sides=['branch'], mosh=False)


def fleet_sizes(series):
    return sorted(int(k[0].split('-')[1]) for k in series.samples if k[0].startswith('fleet-') and k[1:] == ('revoke', 'dead'))


def fleet_model(series, fit=(5, 10), kind='dead'):
    """Time-to-dead of the revoke playbook as a + b * hosts, fitted on the ``fit`` sizes (least squares).

    On one machine the fleet's hosts and the controller share its CPUs, so every host adds the same CPU work
    (controller and host side) to one queue: time grows linearly with the hosts once the forks keep the CPUs busy.
    """
    pts = [(n, series.median(('fleet-%d' % n, 'revoke', kind))) for n in fit if ('fleet-%d' % n, 'revoke', kind) in series.samples]
    if len(pts) < 2:
        return None
    xs, ys = [n for n, _t in pts], [t for _n, t in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((n - mx) * (t - my) for n, t in pts) / sum((n - mx) ** 2 for n in xs)
    return my - b * mx, b


# What the AWX model assumes of an execution node (its CPUs), and the fleet sizes and knobs it tabulates.
NODE_CPUS = 4
AWX_HOSTS = (1000, 10000)
AWX_SLICES = (1, 5, 10, 20)
AWX_FORKS = (5, 10, 20, 50, 200)


def awx_parts(series):
    """The measured per-host costs of the revoke playbook (seconds), from the fleet runs of this machine:

    ``startup``  ansible-playbook until its first connection (no host matched: parsing, roles, plugins);
    ``dead``     one host's time from its first connection to its last process gone (the 1-host runs: the
                 machine's CPUs idle but for that host, so this is latency, not CPU queueing);
    ``full``     one host's whole run (door and kill, verify, summary) likewise;
    ``cpu``      controller CPU per host (ansible, its forks and ssh), median over the runs of 5 hosts and more.
    """
    if ('fleet-startup',) not in series.samples or ('fleet-1', 'revoke', 'dead') not in series.samples:
        return None
    startup = series.median(('fleet-startup',))
    per_host = [v / n for n in fleet_sizes(series) if n >= 5 for v in series.samples[('fleet-%d' % n, 'revoke', 'cpu')]]
    if not per_host:
        return None
    cpu = statistics.median(per_host)
    return {'startup': startup, 'dead': series.median(('fleet-1', 'revoke', 'dead')) - startup,
            'full': series.median(('fleet-1', 'revoke', 'wall')) - startup, 'cpu': cpu}


def awx_predict(parts, hosts, slices, forks, cpus=NODE_CPUS):
    """Time-to-dead of ``hosts`` hosts in ``slices`` job slices of ``forks`` forks, each on a node of ``cpus`` CPUs.

    A slice runs its hosts in waves of ``forks`` (strategy free keeps every fork busy); its last wave's hosts die
    ``dead`` after they start. A node cannot go faster than its CPUs allow: ``cpu`` seconds per host over ``cpus``.
    """
    per_slice = -(-hosts // slices)
    waves = -(-per_slice // forks)
    latency = (waves - 1) * parts['full'] + parts['dead']
    return parts['startup'] + max(latency, per_slice * parts['cpu'] / cpus)


def awx_rows(series):
    parts = awx_parts(series)
    if not parts:
        return []
    rows = []
    if ('fleet-50', 'revoke', 'dead') in series.samples:
        # With CPUs to spare, 50 hosts at 20 forks take three waves of one host's latency.
        free = awx_predict(dict(parts, cpu=0), 50, 1, 20)
        got = series.median(('fleet-50', 'revoke', 'dead'))
        rows.append('| 50 hosts with CPUs to spare (latency only, 20 forks) | %.1f s | measured %.1f s | %.0f %% of it is '
                    'waiting for CPU | |' % (free, got, (got - free) / got * 100))
    inputs = ('Model inputs (measured here): start-up %.1f s, one host to dead %.1f s, one host in full %.1f s, '
              'controller CPU %.2f s per host; an execution node of %d CPUs.'
              % (parts['startup'], parts['dead'], parts['full'], parts['cpu'], NODE_CPUS))
    rows += ['', inputs, '', '| hosts | slices | ' + ' | '.join('%d forks' % f for f in AWX_FORKS) + ' |',
             '|---|---|' + '---|' * len(AWX_FORKS)]
    for h in AWX_HOSTS:
        for s in AWX_SLICES:
            rows.append('| %d | %d | ' % (h, s) + ' | '.join('%.0f s' % awx_predict(parts, h, s, f) for f in AWX_FORKS) + ' |')
    return rows


def fleet_rows(series, forks):
    rows = []
    model = fleet_model(series)
    for n in fleet_sizes(series):
        k = 'fleet-%d' % n
        ratio = series.median((k, 'revoke', 'dead')) / series.median((k, 'pkill', 'dead'))
        cells = (series.cell((k, 'revoke', 'dead')), series.cell((k, 'revoke', 'wall')),
                 series.cell((k, 'pkill', 'dead')), series.cell((k, 'pkill', 'wall')))
        rows.append('| fleet time-to-dead, %d hosts x 5 mosh sessions, %d forks | %s (wall %s) | ad-hoc pkill: %s (wall %s) '
                    '| %.2fx | <= 1.5x |' % ((n, forks) + cells + (ratio,)))
    if model:
        a, b = model
        for n in fleet_sizes(series):
            if n <= 10:
                continue
            got = series.median(('fleet-%d' % n, 'revoke', 'dead'))
            rows.append('| model (fit on 5 and 10 hosts: %.1f s + %.2f s/host) at %d hosts | predicts %.1f s | measured %.1f s '
                        '| error %+.0f %% | within 25 %% |' % (a, b, n, a + b * n, got, ((a + b * n) / got - 1) * 100))
    return rows


def machine():
    cpu = 'unknown CPU'
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    return '%s, %d CPUs, %s, Linux %s, Python %s' % (cpu, os.cpu_count(), mem_total(), platform.release(),
                                                     platform.python_version())


def mem_total():
    with open('/proc/meminfo') as f:
        kb = int(f.readline().split()[1])
    return '%.0f GB RAM' % (kb / 1048576.0)


def table(series, sides, args):
    """Rows of (what, ours, reference, ratio, target) as markdown lines."""
    rows = ['| comparison | sessionguard | reference | ratio | target |', '|---|---|---|---|---|']
    if ('discovery', 'pgrep') in series.samples:
        ref = series.median(('discovery', 'pgrep'))
        for side in sides:
            for reader in ('procfs', 'psutil'):
                key = ('discovery', side, reader)
                rows.append('| discovery, %d processes, %s reader (%s) | %s | pgrep -u + pgrep -x: %s | %.2fx | <= 0.5x |'
                            % (args.procs, reader, side, series.cell(key), series.cell(('discovery', 'pgrep')),
                               series.median(key) / ref))
    if ('module', 'pkill') in series.samples:
        ref = series.median(('module', 'pkill'))
        for side in sides:
            key = ('module', side)
            rows.append('| module end to end, 500 processes (%s) | %s | ad-hoc pkill: %s | %.2fx | <= 1.3x |'
                        % (side, series.cell(key), series.cell(('module', 'pkill')), series.median(key) / ref))
            rows.append('| module peak memory (%s) | %s | | | < 50 MB |' % (side, series.cell(('module', side, 'rss'), 'MB')))
    sizes = sorted(int(k[0].split('-')[1]) for k in series.samples if k[0].startswith('scaling-') and k[1:] == ('pgrep',))
    if sizes:
        # Per 1,000 processes of the table as read: the machine runs others' processes besides the crowd.
        per = [series.median(('scaling-%d' % n, 'branch', 'procfs')) / table_size(series, 'scaling-%d' % n, n) * 1000
               for n in sizes]
        for n, p in zip(sizes, per):
            key = ('scaling-%d' % n, 'branch', 'procfs')
            rows.append('| scaling: discovery at %d processes (%d in the table) | %s (%.3f s per 1,000) | pgrep pair: %s | %.2fx | |'
                        % (n, table_size(series, 'scaling-%d' % n, n), series.cell(key), p, series.cell(('scaling-%d' % n, 'pgrep')),
                           series.median(key) / series.median(('scaling-%d' % n, 'pgrep'))))
        mid = statistics.median(per)
        rows.append('| scaling: time per 1,000 processes, %s | largest deviation from the median %.0f %% | | | < 25 %% |'
                    % ('1k-20k' if len(sizes) > 1 else '', max(abs(p - mid) / mid for p in per) * 100))
    return rows + fleet_rows(series, args.forks) + awx_rows(series)


def table_size(series, label, default):
    key = (label, 'branch', 'procfs', 'table')
    return series.median(key) if key in series.samples else default


def plot(series, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = sorted(int(k[0].split('-')[1]) for k in series.samples if k[0].startswith('scaling-') and k[1:] == ('pgrep',))
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in ((('branch', 'procfs'), 'sessionguard discovery (procfs reader)'),
                       (('branch', 'psutil'), 'sessionguard discovery (psutil reader)'),
                       (('pgrep',), 'pgrep -u USER + pgrep -x mosh-server')):
        xs = [n for n in sizes if ('scaling-%d' % n,) + key in series.samples]
        ax.plot([n / 1000.0 for n in xs], [series.median(('scaling-%d' % n,) + key) for n in xs], marker='o', label=label)
    ax.set_xlabel('processes on the host (thousands)')
    ax.set_ylabel('seconds (median)')
    ax.set_title('Finding one user\'s sessions on a crowded host')
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    hosts = fleet_sizes(series)
    if hosts:
        fig, ax = plt.subplots(figsize=(6, 4))
        for side, label in (('revoke', 'ansible-playbook sessionguard.mosh.revoke'), ('pkill', "ansible -m command -a 'pkill -KILL -u U'")):
            ax.plot(hosts, [series.median(('fleet-%d' % n, side, 'dead')) for n in hosts], marker='o', label=label)
        model = fleet_model(series)
        if model:
            a, b = model
            ax.plot(hosts, [a + b * n for n in hosts], linestyle='--', label='model fitted on 5 and 10 hosts')
        ax.set_xlabel('fleet hosts (5 mosh sessions each)')
        ax.set_ylabel('time to dead, seconds (median)')
        ax.set_title('Fleet time-to-dead, watched from outside')
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path.replace('.png', '-fleet.png'))


def main():
    if os.geteuid() != 0:
        sys.exit('run as root')
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--procs', type=int, default=10000)
    ap.add_argument('--only', default='discovery,module,scaling,fleet', help='comma-separated: discovery,module,scaling,fleet')
    ap.add_argument('--fleet-sizes', default='5,10,20,50')
    ap.add_argument('--fleet-rounds', type=int, default=2)
    ap.add_argument('--forks', type=int, default=20)
    ap.add_argument('--sizes', default='1000,5000,10000,20000')
    ap.add_argument('--baseline', help='also measure the collection as of this git ref (e.g. main)')
    ap.add_argument('--json', help='write the raw samples here')
    ap.add_argument('--from-json', nargs='+', help='measure nothing: report the samples of these --json files')
    ap.add_argument('--plot', help='write the scaling plot here (PNG)')
    args = ap.parse_args()
    only = set(args.only.split(','))
    series = Series()
    if args.from_json:
        report(series, args, load(series, args.from_json))
        return
    work = Work(args.baseline)

    def save():
        # After every stage: a run cut short keeps what it measured.
        if args.json:
            with open(args.json, 'w') as f:
                json.dump({'sides': list(work.sides), 'machine': machine(), 'command': sys.argv,
                           'samples': [[list(k), v] for k, v in series.samples.items()]}, f, indent=1)

    try:
        # What needs no lock first; then what starts mosh-servers or fleets, each under the lock.
        if 'module' in only:
            bench_module(work, args.rounds, args.procs, series)
            save()
        if 'scaling' in only:
            bench_scaling(work, max(3, args.rounds // 2), [int(x) for x in args.sizes.split(',')], series)
            save()
        if 'discovery' in only:
            bench_discovery(work, args.rounds, args.procs, series)
            save()
        if 'fleet' in only:
            import fleet   # pylint: disable=import-outside-toplevel  # needs the test harness (tests/lib)
            for _round in range(3):
                series.add(('fleet-startup',), fleet.startup())
            for n in [int(x) for x in args.fleet_sizes.split(',')]:
                fleet.measure(n, args.fleet_rounds, args.forks, series, live_lock)
                save()
    finally:
        kill_uids(CROWD_UIDS + [MODULE_VICTIM])
        work.close()
    report(series, args, {'sides': list(work.sides), 'machine': machine(), 'command': sys.argv})


def load(series, paths):
    """Samples of earlier runs, merged; the machine and command of the first."""
    meta = None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if 'samples' not in data:   # the first format: "a/b/c" keys, nothing else
            sides = sorted(set(k.split('/')[1] for k in data if k.startswith('module/')) - {'pkill'})
            data = {'sides': sorted(sides, key=lambda s: s != 'branch'), 'machine': machine(),
                    'command': ['benchmarks/run.py', '--baseline'] + [s for s in sides if s != 'branch'],
                    'samples': [[k.split('/'), v] for k, v in data.items()]}
        for k, v in data['samples']:
            for x in v:
                series.add(tuple(k), x)
        meta = meta or data
    return meta


def report(series, args, meta):
    print('Machine: %s' % meta['machine'])
    print('Command: %s' % ' '.join(shlex.quote(a) for a in meta['command']))
    print('\n'.join(table(series, meta['sides'], args)))
    if args.plot:
        plot(series, args.plot)


if __name__ == '__main__':
    main()

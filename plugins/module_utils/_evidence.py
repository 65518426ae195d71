# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Evidence on the host: the forensic snapshot taken while the set is frozen, and the syslog line per ended session.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

The snapshot is taken by the termination engine after the whole set is frozen and before the first signal: the
last moment the processes can be looked at, and one at which none of them can fork, exit or change. It never
delays the kill by more than its time budget and never stops it: every failure (an unwritable directory, a hung
file system, the budget running out) is recorded as the reason the evidence is incomplete or missing, and the
revocation goes on. Reading happens in the frozen window; hashing executables (whose files may sit on a hung
mount) and writing the file (on a disk that may hang) run in helper processes with a deadline.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import socket
import stat
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import (
    CLK_TCK, PROC, boot_time, pid_path, read_socket_states)
from ansible_collections.sessionguard.mosh.plugins.module_utils._sessions import Hung, bounded_call
from ansible_collections.sessionguard.mosh.plugins.module_utils._text import decode, escape
from ansible_collections.sessionguard.mosh.plugins.module_utils._utmp import USER_PROCESS, UTMP_PATHS, read_file

FORMAT = 'sessionguard-evidence/1'
DEFAULT_DIR = '/var/lib/sessionguard/evidence'
DEFAULT_TIMEOUT = 5.0
DEFAULT_KEEP_DAYS = 90
# Per process: open files and connections listed (all are counted). A user chooses how many descriptors they hold.
FILES_MAX = 64
ENVIRON_MAX = 65536
UTMP_MAX = 1000
# Executables are hashed whole up to this size; a bigger one gets the hash of its first HASH_MAX bytes, marked.
HASH_MAX = 256 << 20
# The hashing and writing helpers get at least this long even when the collection used the whole budget.
_HELPER_MIN = 1.0
RUN_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$')
SYSLOG_TAG = 'sessionguard'


def new_run_id():
    """A run id for a revocation started without one: UTC time and 8 random hex digits."""
    return 'sg-%s-%s' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()), os.urandom(4).hex())


def run_id_error(value):
    """Why ``value`` cannot be a run id (it names files on the host and the controller), or None."""
    if not isinstance(value, str) or not RUN_ID.match(value):
        return ('run_id must be 1 to 128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit; '
                'got %r' % (value,))
    return None


def _iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def _prepare_dir(directory, probe):
    """In a helper: the directory exists, is a real directory, is root's and 0700; a file can be created in it."""
    try:
        os.makedirs(directory, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError('%s is not a directory' % directory)
    if st.st_uid != os.geteuid():
        raise OSError('%s belongs to UID %d, not to UID %d' % (directory, st.st_uid, os.geteuid()))
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    fd = os.open(os.path.join(directory, probe), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    return True


def _write_file(directory, partial, name, data, keep_days):
    """In a helper: write ``data`` to ``partial``, fsync, rename to ``name``; drop snapshots older than keep_days."""
    path = os.path.join(directory, partial)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(path, os.path.join(directory, name))
    pruned = 0
    if keep_days > 0:
        cutoff = time.time() - keep_days * 86400
        for entry in os.listdir(directory):
            if not entry.endswith('.json') or entry == name:
                continue
            p = os.path.join(directory, entry)
            try:
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    os.unlink(p)
                    pruned += 1
            except OSError:
                continue
    return pruned


def _hash_exes(pids, root, limit):
    """In a helper: {pid: [sha256, size, cut]} of each process's executable, read through /proc/PID/exe (a deleted
    binary too); a file shared by many processes is hashed once. A pid whose binary cannot be read is left out."""
    out, seen = {}, {}
    for pid in pids:
        try:
            fd = os.open(pid_path(pid, 'exe', root=root), os.O_RDONLY)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in seen:
                h, n = hashlib.sha256(), 0
                while n < limit:
                    chunk = os.read(fd, min(1 << 20, limit - n))
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                seen[key] = [h.hexdigest(), st.st_size, st.st_size > n]
            out[pid] = seen[key]
        except OSError:
            pass
        finally:
            os.close(fd)
    return out


class Evidence(object):
    """One host's forensic snapshot of a revocation: prepared before the freeze, collected while frozen, written
    after the kill. ``summary()`` is what the module returns; the file holds everything."""

    def __init__(self, run_id, reason=None, directory=DEFAULT_DIR, timeout=DEFAULT_TIMEOUT, environ=False,
                 keep_days=DEFAULT_KEEP_DAYS, users=(), root=PROC):
        self.run_id, self.reason, self.directory = run_id, reason, directory
        self.timeout, self.environ, self.keep_days = timeout, environ, keep_days
        self.users = list(users)
        self.root = root
        self.name = '%s.json' % run_id
        self.partial = '.%s.partial' % run_id
        self.problems = []
        self.ready = False
        self.taken = False
        self.doc = None
        self.path = self.sha256 = self.size = None
        self.seconds = None
        self.sessions = []
        self.freezer = None

    def prepare(self):
        """Before the freeze: make sure the snapshot can be stored. False (with the reason) when it cannot."""
        try:
            bounded_call(_prepare_dir, (self.directory, self.partial), max(self.timeout, _HELPER_MIN))
            self.ready = True
        except (Hung, OSError) as e:
            self.problems.append('evidence directory %s is not usable: %s' % (self.directory, e))
        return self.ready

    def collect(self, procs):
        """In the frozen window: read every process of the set, within the time budget. Never raises an Exception:
        the kill must go on whatever happens here."""
        start = time.monotonic()
        deadline = start + self.timeout
        try:
            self._collect(procs, deadline)
        except Exception as e:  # noqa: B902 - evidence must never stop the kill; the reason is recorded
            self.problems.append('collecting failed: %s: %s' % (type(e).__name__, escape(str(e))))
        self.seconds = round(time.monotonic() - start, 3)

    def _collect(self, procs, deadline):
        procs = sorted(procs, key=lambda p: p.pid)
        boot = boot_time(self.root)
        tables = {}
        records = []
        for n, p in enumerate(procs):
            if n % 32 == 0 and time.monotonic() > deadline:
                self.problems.append('time budget of %g s ran out after %d of %d processes' % (self.timeout, n, len(procs)))
                break
            records.append(self._process(p, boot, tables))
        left = deadline - time.monotonic()
        hashes = {}
        try:
            hashes = bounded_call(_hash_exes, ([r['pid'] for r in records], self.root, HASH_MAX), max(left, _HELPER_MIN))
        except (Hung, OSError) as e:
            self.problems.append('hashing executables: %s' % e)
        for r in records:
            h = hashes.get(r['pid'])
            if h is not None:
                r['exe_sha256'], r['exe_size'] = h[0], h[1]
                if h[2]:
                    r['exe_sha256_of_first_bytes'] = HASH_MAX
        self.doc = {
            'format': FORMAT,
            'run_id': self.run_id,
            'host': decode(socket.gethostname()),
            'reason': self.reason,
            'users': self.users,
            'taken': _iso(time.time()),
            'process_count': len(procs),
            'processes': records,
            'sessions': self.sessions,
            'utmp': self._utmp(),
            'environ_included': bool(self.environ),
        }
        self.taken = True

    def _process(self, p, boot, tables):
        r = {
            'pid': p.pid, 'ppid': p.ppid, 'uids': list(p.uids), 'name': p.name, 'state': p.state,
            'start_time': _iso(boot + p.start_ticks / float(CLK_TCK)), 'start_ticks': p.start_ticks,
            'cmdline': p.cmdline, 'tty': p.tty, 'sid': p.sid, 'pgrp': p.pgrp,
            'loginuid': p.loginuid, 'audit_session': p.audit_session, 'cgroup': p.cgroup,
            'exe': p.exe, 'exe_deleted': bool(p.exe_deleted), 'exe_sha256': None, 'exe_size': None,
        }
        try:
            r['cwd'] = decode(os.readlink(pid_path(p.pid, 'cwd', root=self.root).encode()))
        except OSError:
            r['cwd'] = None
        files, conns, inodes, count = [], [], [], 0
        fd_dir = pid_path(p.pid, 'fd', root=self.root)
        try:
            names = sorted(os.listdir(fd_dir), key=lambda x: int(x) if x.isdigit() else -1)
        except OSError as e:
            names = []
            r['fds_unreadable'] = e.strerror
        for fd in names:
            try:
                # readlink on /proc/PID/fd never reaches the file's own file system (no hang on a dead mount).
                target = os.readlink(os.path.join(fd_dir, fd).encode())
            except OSError:
                continue
            count += 1
            if target.startswith(b'socket:['):
                inodes.append((int(fd), int(target[8:-1])))
            elif len(files) < FILES_MAX:
                files.append({'fd': int(fd), 'path': decode(target)})
        for fd, inode in inodes:
            for proto in ('tcp', 'udp'):
                key = (p.netns, proto)
                if key not in tables:
                    tables[key] = read_socket_states(p.pid, proto, self.root)
                entry = tables[key].get(inode)
                if entry is not None:
                    if len(conns) < FILES_MAX:
                        conns.append({'fd': fd, 'proto': proto, 'local': '%s:%d' % entry[0],
                                      'remote': '%s:%d' % entry[1], 'state': entry[2]})
                    break
        r.update({'fd_count': count, 'files': files, 'connections': conns, 'sockets': len(inodes),
                  'files_truncated': count - len(inodes) > len(files), 'connections_truncated': len(inodes) > FILES_MAX})
        if self.environ:
            try:
                with open(pid_path(p.pid, 'environ', root=self.root), 'rb') as f:
                    raw = f.read(ENVIRON_MAX + 1)
                r['environ'] = [decode(v) for v in raw[:ENVIRON_MAX].split(b'\0') if v]
                r['environ_truncated'] = len(raw) > ENVIRON_MAX
            except OSError:
                r['environ'] = None
        return r

    def _utmp(self):
        """The utmp login records of the revoked users, and every mosh record: the client-address view."""
        names = set(u for u in self.users if isinstance(u, str))
        for path in UTMP_PATHS:
            if os.path.exists(path):
                try:
                    records = read_file(path)
                except OSError as e:
                    self.problems.append('reading %s: %s' % (path, e))
                    return []
                out = [{'type': r.type, 'pid': r.pid, 'line': r.line, 'user': r.user, 'host': r.host,
                        'time': _iso(r.time)}
                       for r in records if r.type == USER_PROCESS and (r.user in names or r.mosh())]
                return out[:UTMP_MAX]
        return []

    def write(self, freezer=None):
        """After the kill: store the snapshot (in a helper with a deadline: a hung disk cannot hold the module)."""
        if not self.taken:
            self._cleanup()
            return
        self.doc['complete'] = not self.problems
        self.doc['problems'] = list(self.problems)
        self.doc['freezer'] = freezer
        self.doc['collect_seconds'] = self.seconds
        data = (json.dumps(self.doc, sort_keys=True, separators=(',', ':')) + '\n').encode('ascii')
        try:
            bounded_call(_write_file, (self.directory, self.partial, self.name, data, self.keep_days),
                         max(self.timeout, _HELPER_MIN))
        except (Hung, OSError) as e:
            self.problems.append('writing %s: %s' % (os.path.join(self.directory, self.name), e))
            self._cleanup()
            return
        self.path = os.path.join(self.directory, self.name)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.size = len(data)

    def _cleanup(self):
        if self.ready:
            try:
                bounded_call(os.unlink, (os.path.join(self.directory, self.partial),), _HELPER_MIN)
            except (Hung, OSError):
                pass

    def summary(self):
        """The module result's part: small whatever the number of processes."""
        return {
            'run_id': self.run_id,
            'path': self.path,
            'sha256': self.sha256,
            'size': self.size,
            'complete': self.path is not None and not self.problems,
            'missing': self.path is None,
            'reason': '; '.join(self.problems) if self.problems else None,
            'process_count': self.doc['process_count'] if self.doc else 0,
            'processes_recorded': len(self.doc['processes']) if self.doc else 0,
            'collect_seconds': self.seconds,
        }


def not_taken(run_id, why):
    """The result's ``evidence`` when no snapshot was taken (check mode, nothing to end, evidence off)."""
    return {'run_id': run_id, 'path': None, 'sha256': None, 'size': None, 'complete': False, 'missing': True,
            'reason': why, 'process_count': 0, 'processes_recorded': 0, 'collect_seconds': None}


def session_view(session, members, address):
    """One session of the snapshot's session tree (the file keeps every member PID)."""
    leader = session.leader if session is not None else None
    return {
        'kind': session.kind if session is not None else 'other',
        'uid': session.uid if session is not None else None,
        'leader_pid': leader.pid if leader is not None else None,
        'tty': session.tty if session is not None else None,
        'audit_session': getattr(leader, 'audit_session', None),
        'sid': getattr(leader, 'sid', None),
        'client_address': address[0],
        'client_address_source': address[1],
        'member_pids': sorted(p.pid for p in members),
    }


def syslog_sessions(entries, run_id, reason):
    """One syslog line per ended session (facility auth, tag ``sessionguard``), through /dev/log. Returns how many
    were handed to syslog. Every value is JSON-quoted: user, address and reason must not forge a second line."""
    import syslog
    sent = 0
    syslog.openlog(SYSLOG_TAG, syslog.LOG_PID, syslog.LOG_AUTH)
    try:
        for e in entries:
            procs = e.get('processes') or []
            leader_signal = procs[0]['signal'] if procs and procs[0]['pid'] == e.get('leader_pid') else None
            fields = [('run_id', run_id), ('event', 'session_ended'), ('user', e['user']), ('uid', e['uid']),
                      ('kind', e['kind']), ('client', e['client_address']), ('leader_pid', e['leader_pid']),
                      ('signal', leader_signal or _hardest(e['signals'])), ('processes', e['process_count']),
                      ('reason', reason or '')]
            syslog.syslog(syslog.LOG_NOTICE, ' '.join('%s=%s' % (k, json.dumps(v)) for k, v in fields))
            sent += 1
    finally:
        syslog.closelog()
    return sent


def _hardest(signals):
    for name in ('SIGKILL', 'SIGTERM', 'exited'):
        if signals.get(name):
            return name
    return None

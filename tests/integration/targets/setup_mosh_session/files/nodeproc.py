# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the integration targets read and end on the node: processes (from /proc, by PID and start time, so a
reused PID never passes for the process it replaced), signals, and utmp records. Standard library only: it is
copied to the node beside mosh_session.py, which imports it.
"""

from __future__ import annotations

import fcntl
import glob
import os
import signal
import socket
import struct
import time

UTMP_FORMAT = '<hxxi32s4s32s256s'  # ut_type, ut_pid, ut_line, ut_id, ut_user, ut_host (glibc x86_64)
UTMP_SIZE = 384
USER_PROCESS, DEAD_PROCESS = 7, 8


class SetupError(Exception):
    """Something this host cannot do; the task fails with the message."""


def wait_for(predicate, timeout, what):
    """Poll ``predicate`` until it returns something truthy; return that, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SetupError('timed out after %ss waiting for %s' % (timeout, what() if callable(what) else what))
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------- /proc
def proc(pid):
    """pid, start time, ppid, state, real uid, comm and argv of ``pid``, or None once it is gone."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as fh:
            stat = fh.read()
        with open('/proc/%d/status' % pid) as fh:
            uid = int([line for line in fh if line.startswith('Uid:')][0].split()[1])
        with open('/proc/%d/cmdline' % pid, 'rb') as fh:
            argv = [a.decode('utf-8', 'replace') for a in fh.read().split(b'\0')[:-1]]
    except (OSError, IndexError, ValueError):
        return None
    # comm may hold spaces and parentheses; the fields after the last ')' are fixed (proc(5)).
    fields = stat[stat.rindex(b')') + 2:].split()
    return {'pid': pid, 'start': int(fields[19]), 'ppid': int(fields[1]), 'state': fields[0].decode(),
            'uid': uid, 'comm': stat[stat.index(b'(') + 1:stat.rindex(b')')].decode('utf-8', 'replace'),
            'argv': argv}


def live_procs():
    out = []
    for name in os.listdir('/proc'):
        if name.isdigit():
            p = proc(int(name))
            if p is not None and p['state'] not in ('Z', 'X'):
                out.append(p)
    return sorted(out, key=lambda p: p['pid'])


def procs_of(uid):
    return [p for p in live_procs() if p['uid'] == uid]


def brief(p):
    """What the targets compare: a PID with its start time names one process, never a reused PID."""
    return {'pid': p['pid'], 'start': p['start'], 'comm': p['comm'], 'argv0': p['argv'][0] if p['argv'] else ''}


def descendants(pid, table):
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p in table if p['ppid'] == parent]
        found += kids
        todo += [p['pid'] for p in kids]
    return found


def client_source_address(pid, server_address):
    """The IPv4 address the mosh-client ``pid`` sends its UDP packets from, as the server sees them.

    The client's socket is bound to its local address only when it was bound explicitly; an unbound
    one (0.0.0.0) sends from the address the kernel routes to the server from, which a UDP socket
    connected to the same server shows (connecting a UDP socket sends nothing).
    """
    inodes = set()
    for fd in glob.glob('/proc/%d/fd/*' % pid):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
    with open('/proc/%d/net/udp' % pid) as fh:
        bound = [socket.inet_ntoa(struct.pack('<I', int(cols[1].split(':')[0], 16)))
                 for cols in (line.split() for line in list(fh)[1:]) if cols[9] in inodes]
    if not bound:
        raise SetupError('mosh-client %d holds no UDP socket' % pid)
    if bound[0] != '0.0.0.0':
        return bound[0]
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((server_address, 9))
        return probe.getsockname()[0]
    finally:
        probe.close()


def tty_of(pid):
    """The pts a process has as its stdin, e.g. pts/3."""
    return os.readlink('/proc/%d/fd/0' % pid).replace('/dev/', '', 1)


def kill_and_wait(procs, sig, timeout):
    """Signal each process that is still the same process (PID and start time), then wait for all to go."""
    for p in procs:
        now = proc(p['pid'])
        if now is not None and now['start'] == p['start']:
            try:
                os.kill(p['pid'], sig)
            except ProcessLookupError:
                pass
    try:
        wait_for(lambda: not any((proc(p['pid']) or {}).get('start') == p['start'] for p in procs), timeout,
                 'processes to exit')
    except SetupError:
        pass  # the caller escalates or reports


def kill_uids(uids):
    for uid in uids:
        def sweep(uid=uid):
            # kill(-1) with the user's UID reaches every process of the UID at once, even one forking.
            child = os.fork()
            if child == 0:
                try:
                    os.setgroups([])
                    os.setresgid(65534, 65534, 65534)
                    os.setresuid(uid, uid, uid)
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)  # pylint: disable=protected-access
            os.waitpid(child, 0)
            return not procs_of(uid)
        wait_for(sweep, 15, lambda uid=uid: 'every process of UID %d to go: %s' % (uid, procs_of(uid)))
    return {'killed': list(uids)}


def retire_utmp(users):
    names = [u.encode() for u in users]
    retired = 0
    with open('/run/utmp', 'r+b') as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)  # the lock glibc takes to write utmp
        data = fh.read()
        for off in range(0, len(data) - UTMP_SIZE + 1, UTMP_SIZE):
            kind, _pid, _line, _id, user, _host = struct.unpack_from(UTMP_FORMAT, data, off)
            if kind == USER_PROCESS and user.split(b'\0', 1)[0] in names:
                fh.seek(off)
                fh.write(struct.pack('<h', DEAD_PROCESS))
                fh.seek(off + 44)  # ut_user and ut_host cleared
                fh.write(b'\0' * 288)
                retired += 1
    return {'retired': retired}

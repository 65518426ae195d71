# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A snapshot of the Linux process table with what session revocation needs.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Two readers produce the same ``Proc`` records: one reads ``/proc`` directly (so a target without
psutil works), the other uses psutil where it is importable. Fields psutil cannot see (audit
session, cgroup, session id, pty masters) always come from ``/proc``.
"""

from __future__ import annotations

import os
import socket
import struct

try:
    import psutil
    HAS_PSUTIL = True
except ImportError:  # the procfs reader covers everything psutil would
    psutil = None
    HAS_PSUTIL = False

PROC = '/proc'
# /proc/PID/loginuid and /proc/PID/sessionid hold this when pam_loginuid never ran.
UNSET_ID = 4294967295
CLK_TCK = os.sysconf('SC_CLK_TCK')
_CMDLINE_MAX = 4096


def _read(path, limit=65536):
    with open(path, 'rb') as f:
        return f.read(limit)


def _read_int(path):
    try:
        return int(_read(path).strip() or -1)
    except (OSError, ValueError):
        return None


def boot_time():
    for line in _read(os.path.join(PROC, 'stat')).decode().splitlines():
        if line.startswith('btime '):
            return int(line.split()[1])
    raise RuntimeError('btime missing from /proc/stat')


def tty_name(tty_nr):
    """Name of the terminal device number in /proc/PID/stat field 7 (``pts/3``), or None."""
    if not tty_nr:
        return None
    major = (tty_nr >> 8) & 0xfff
    minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00)
    if 136 <= major <= 143:
        return 'pts/%d' % ((major - 136) * 256 + minor)
    if major == 4:
        return 'tty%d' % minor if minor < 64 else 'ttyS%d' % (minor - 64)
    return 'dev/%d:%d' % (major, minor)


class Proc(object):
    """One process as seen at snapshot time. ``fds`` is read lazily (only candidates need it)."""

    __slots__ = ('pid', 'ppid', 'name', 'state', 'pgrp', 'sid', 'tty_nr', 'start_ticks', 'uids',
                 'exe', 'exe_deleted', 'cmdline', 'loginuid', 'audit_session', 'cgroup',
                 'logind_session', 'netns', '_fds', '_reader')

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    @property
    def uid(self):
        return self.uids[0]

    @property
    def euid(self):
        return self.uids[1]

    @property
    def tty(self):
        return tty_name(self.tty_nr)

    @property
    def zombie(self):
        return self.state in ('Z', 'X')

    @property
    def kernel_thread(self):
        return self.pid == 2 or self.ppid == 2

    @property
    def argv0(self):
        return self.cmdline[0] if self.cmdline else ''

    @property
    def command(self):
        """The command line as one string, for reports."""
        return ' '.join(self.cmdline) if self.cmdline else '[%s]' % self.name

    def has_uid(self, uid):
        """True when the process runs as ``uid`` (real or effective)."""
        return uid in (self.uids[0], self.uids[1])

    @property
    def fds(self):
        if self._fds is None:
            self._fds = self._reader.read_fds(self.pid)
        return self._fds

    def identity(self):
        """What makes this process unique over time: a reused PID has another start time."""
        return (self.pid, self.start_ticks)


class Fds(object):
    """What a process holds open that matters here: socket inodes and pty masters."""

    __slots__ = ('sockets', 'pty_masters', 'readable')

    def __init__(self, sockets=(), pty_masters=(), readable=True):
        self.sockets = set(sockets)
        self.pty_masters = list(pty_masters)   # pts indexes (``tty-index`` in fdinfo); -1 if unknown
        self.readable = readable


def parse_stat(raw):
    """Split /proc/PID/stat; the comm field may itself hold spaces and parentheses."""
    text = raw.decode('utf-8', 'surrogateescape')
    lpar, rpar = text.index('('), text.rindex(')')
    rest = text[rpar + 2:].split()
    return {
        'name': text[lpar + 1:rpar],
        'state': rest[0],
        'ppid': int(rest[1]),
        'pgrp': int(rest[2]),
        'sid': int(rest[3]),
        'tty_nr': int(rest[4]),
        'start_ticks': int(rest[19]),
    }


def read_start_ticks(pid):
    """Start time of ``pid`` in clock ticks since boot, or None when it no longer exists."""
    try:
        return parse_stat(_read(os.path.join(PROC, str(pid), 'stat')))['start_ticks']
    except (OSError, ValueError, IndexError):
        return None


def read_state(pid):
    try:
        return parse_stat(_read(os.path.join(PROC, str(pid), 'stat')))['state']
    except (OSError, ValueError, IndexError):
        return None


def own_chain():
    """This process and its ancestors: never signalled, whoever they belong to."""
    chain, pid = [], os.getpid()
    while pid > 0 and pid not in chain:
        chain.append(pid)
        try:
            pid = parse_stat(_read(os.path.join(PROC, str(pid), 'stat')))['ppid']
        except (OSError, ValueError, IndexError):
            break
    return chain


def _text(raw):
    return raw.decode('utf-8', 'replace')


class ProcfsReader(object):
    """Reads everything from /proc."""

    name = 'procfs'

    def list_pids(self):
        return sorted(int(d) for d in os.listdir(PROC) if d.isdigit())

    def _base(self, pid):
        d = os.path.join(PROC, str(pid))
        fields = parse_stat(_read(os.path.join(d, 'stat')))
        uids = None
        for line in _read(os.path.join(d, 'status')).decode('utf-8', 'replace').splitlines():
            if line.startswith('Uid:'):
                uids = tuple(int(x) for x in line.split()[1:5])
                break
        fields['uids'] = uids
        fields['loginuid'] = _read_int(os.path.join(d, 'loginuid'))
        fields['audit_session'] = _read_int(os.path.join(d, 'sessionid'))
        fields['cgroup'], fields['logind_session'] = self._cgroup(d)
        try:
            fields['netns'] = os.readlink(os.path.join(d, 'ns', 'net'))
        except OSError:
            fields['netns'] = None
        return fields

    @staticmethod
    def _cgroup(d):
        try:
            lines = _read(os.path.join(d, 'cgroup')).decode('utf-8', 'replace').splitlines()
        except OSError:
            return None, None
        best = None
        for line in lines:
            path = line.split(':', 2)[-1]
            for part in path.split('/'):
                if part.startswith('session-') and part.endswith('.scope'):
                    return path, part[len('session-'):-len('.scope')]
            if line.startswith('0::') or best is None:
                best = path
        return best, None

    def _identity(self, pid):
        d = os.path.join(PROC, str(pid))
        try:
            raw = _read(os.path.join(d, 'cmdline'), _CMDLINE_MAX)
            cmdline = [_text(a) for a in raw.split(b'\0')]
            while cmdline and cmdline[-1] == '':
                cmdline.pop()
        except OSError:
            cmdline = []
        exe, deleted = _read_exe(d)
        return cmdline, exe, deleted

    def read(self, pid):
        """A Proc for ``pid``, or None when it vanished while being read."""
        try:
            fields = self._base(pid)
            if fields['uids'] is None:
                return None
            cmdline, exe, deleted = self._identity(pid)
        except (OSError, ValueError, IndexError):
            return None
        return Proc(pid=pid, cmdline=cmdline, exe=exe, exe_deleted=deleted, _reader=self, **fields)

    def read_fds(self, pid):
        d = os.path.join(PROC, str(pid), 'fd')
        sockets, masters = set(), []
        try:
            names = os.listdir(d)
        except OSError:
            return Fds(readable=False)
        for fd in names:
            try:
                target = os.readlink(os.path.join(d, fd))
            except OSError:
                continue
            if target.startswith('socket:['):
                sockets.add(int(target[8:-1]))
            elif target in ('/dev/ptmx', '/dev/pts/ptmx'):
                masters.append(_tty_index(pid, fd))
        return Fds(sockets, masters)


def _read_exe(d):
    try:
        exe = os.readlink(os.path.join(d, 'exe'))
    except OSError:
        return None, False
    if exe.endswith(' (deleted)'):
        return exe[:-len(' (deleted)')], True
    return exe, False


def _tty_index(pid, fd):
    try:
        for line in _read(os.path.join(PROC, str(pid), 'fdinfo', fd)).decode().splitlines():
            if line.startswith('tty-index:'):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


class PsutilReader(ProcfsReader):
    """Takes identity fields (pids, uids, ppid, argv, exe) from psutil; /proc for the rest.

    psutil strips `` (deleted)`` from exe; the deleted flag comes from /proc so both readers agree.
    """

    name = 'psutil'

    def list_pids(self):
        return sorted(psutil.pids())

    def read(self, pid):
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                fields = self._base(pid)
                if fields['uids'] is None:
                    return None
                u = p.uids()
                fields['uids'] = (u.real, u.effective, u.saved, fields['uids'][3])
                fields['ppid'] = p.ppid()
                try:
                    cmdline = list(p.cmdline())
                except psutil.AccessDenied:
                    cmdline = []
                try:
                    exe = p.exe() or None
                except psutil.AccessDenied:
                    exe = None
                deleted = _read_exe(os.path.join(PROC, str(pid)))[1] if exe else False
        except (psutil.Error, OSError, ValueError, IndexError):
            return None
        return Proc(pid=pid, cmdline=cmdline, exe=exe, exe_deleted=deleted, _reader=self, **fields)


def make_reader(prefer_psutil=True):
    if prefer_psutil and HAS_PSUTIL:
        return PsutilReader()
    return ProcfsReader()


class Snapshot(object):
    """The process table at one moment, with the indexes discovery needs."""

    def __init__(self, reader=None, pids=None):
        self.reader = reader or make_reader()
        self.procs = {}
        for pid in (pids if pids is not None else self.reader.list_pids()):
            p = self.reader.read(pid)
            if p is not None:
                self.procs[pid] = p
        self.children = {}
        for p in self.procs.values():
            self.children.setdefault(p.ppid, []).append(p.pid)
        self._sockets = {}

    def __iter__(self):
        return iter(sorted(self.procs.values(), key=lambda p: p.pid))

    def get(self, pid):
        return self.procs.get(pid)

    def descendants(self, pid):
        out, stack = [], list(self.children.get(pid, ()))
        while stack:
            c = stack.pop()
            if c in self.procs:
                out.append(c)
                stack.extend(self.children.get(c, ()))
        return out

    def ancestors(self, pid):
        """``pid`` and every ancestor up to PID 1, as far as the snapshot knows them."""
        chain, seen = [], set()
        while pid and pid not in seen:
            seen.add(pid)
            chain.append(pid)
            p = self.procs.get(pid)
            if p is None:
                break
            pid = p.ppid
        return chain

    def socket_table(self, proc, proto):
        """Socket inode -> (local (ip, port), remote (ip, port)) for ``proto`` in the netns of ``proc``."""
        key = (proc.netns, proto)
        if key not in self._sockets:
            self._sockets[key] = read_socket_table(proc.pid, proto)
        return self._sockets[key]


def _hex_addr(text):
    ip_hex, port_hex = text.split(':')
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack('<I', struct.unpack('>I', raw)[0]))
    else:
        # IPv6 is stored as four host-order 32-bit words.
        words = struct.unpack('>4I', raw)
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack('<4I', *words))
        if ip.startswith('::ffff:') and '.' in ip:
            ip = ip[len('::ffff:'):]
    return ip, int(port_hex, 16)


def read_socket_table(pid, proto):
    """Parse /proc/PID/net/{proto}{,6}: keyed by inode, so sockets are found in the right netns."""
    table = {}
    for name in (proto, proto + '6'):
        try:
            lines = _read(os.path.join(PROC, str(pid), 'net', name), 16 << 20).decode().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10:
                continue
            try:
                table[int(cols[9])] = (_hex_addr(cols[1]), _hex_addr(cols[2]))
            except ValueError:
                continue
    return table

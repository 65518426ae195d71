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

import errno
import fcntl
import os
import socket
import struct

from ansible_collections.sessionguard.mosh.plugins.module_utils._text import decode

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
# Every read is bounded: a hostile user chooses the size of argv, cgroup paths and the environment.
CMDLINE_MAX = 4096
_READ_MAX = 65536
# The errors that mean "the process is gone". Anything else (EMFILE, EACCES, ...) is not an answer.
VANISHED = (errno.ENOENT, errno.ESRCH)


def _read(path, limit=_READ_MAX):
    with open(path, 'rb') as f:
        return f.read(limit)


def _read_int(path):
    try:
        return int(_read(path).strip() or -1)
    except (OSError, ValueError):
        return None


def pid_path(pid, *parts, **kw):
    """Path of ``/proc/PID/parts...`` under the procfs ``root`` (the one seam for /proc paths)."""
    return os.path.join(kw.get('root') or PROC, str(pid), *parts)


def open_fds():
    """The descriptors this process holds (always the machine's own /proc: it is about us)."""
    return [int(name) for name in os.listdir(pid_path('self', 'fd'))]


def last_pid(root=PROC):
    """The PID the kernel handed out last in this PID namespace, or None."""
    try:
        return int(_read(os.path.join(root, 'sys', 'kernel', 'ns_last_pid')))
    except (OSError, ValueError):
        return None


def boot_time(root=PROC):
    for line in _read(os.path.join(root, 'stat')).decode('ascii', 'replace').splitlines():
        if line.startswith('btime '):
            return int(line.split()[1])
    raise RuntimeError('btime missing from %s/stat' % root)


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
        self.pty_masters = list(pty_masters)   # pts indexes (``tty-index`` in fdinfo)
        self.readable = readable


def parse_stat(raw):
    """Split /proc/PID/stat; the comm field may itself hold spaces and parentheses."""
    lpar, rpar = raw.index(b'('), raw.rindex(b')')
    rest = raw[rpar + 2:].split()
    return {
        'name': decode(raw[lpar + 1:rpar]),
        'state': rest[0].decode('ascii', 'replace'),
        'ppid': int(rest[1]),
        'pgrp': int(rest[2]),
        'sid': int(rest[3]),
        'tty_nr': int(rest[4]),
        'start_ticks': int(rest[19]),
    }


def _stat_field(pid, field, root):
    """One field of /proc/PID/stat; None when the process is gone. Other errors propagate."""
    try:
        return parse_stat(_read(pid_path(pid, 'stat', root=root)))[field]
    except OSError as e:
        if e.errno in VANISHED:
            return None
        raise
    except (ValueError, IndexError):  # a stat line cut short by exit
        return None


def read_start_ticks(pid, root=PROC):
    """Start time of ``pid`` in clock ticks since boot, or None when it no longer exists.

    Raises OSError when /proc cannot be read for another reason (out of descriptors, say): "could not
    read" must never be taken for "gone".
    """
    return _stat_field(pid, 'start_ticks', root)


def read_state(pid, root=PROC):
    return _stat_field(pid, 'state', root)


def read_name(pid, root=PROC):
    """The process name (``comm``) of ``pid``, escaped; None when it is gone."""
    return _stat_field(pid, 'name', root)


def read_loginuid(pid='self', root=PROC):
    """The audit loginuid of ``pid`` (the user who logged in, kept across sudo), or None; UNSET_ID when unset."""
    return _read_int(pid_path(pid, 'loginuid', root=root))


def own_chain(root=PROC):
    """This process and its ancestors: never signalled, whoever they belong to."""
    chain, pid = [], os.getpid()
    while pid > 0 and pid not in chain:
        chain.append(pid)
        try:
            pid = parse_stat(_read(pid_path(pid, 'stat', root=root)))['ppid']
        except (OSError, ValueError, IndexError):
            break
    return chain


def read_environ_var(pid, name, root=PROC):
    """Value of environment variable ``name`` of ``pid`` as it was at exec, or None."""
    try:
        data = _read(pid_path(pid, 'environ', root=root), 1 << 20)
    except OSError:
        return None
    prefix = name.encode() + b'='
    for item in data.split(b'\0'):
        if item.startswith(prefix):
            return decode(item[len(prefix):])
    return None


def read_cmdline(pid, root=PROC):
    """argv of ``pid``, at most CMDLINE_MAX bytes of it (a user may pass megabytes)."""
    try:
        raw = _read(pid_path(pid, 'cmdline', root=root), CMDLINE_MAX)
    except OSError:
        return []
    cmdline = [decode(a) for a in raw.split(b'\0')]
    while cmdline and cmdline[-1] == '':
        cmdline.pop()
    return cmdline


def read_exe(pid, root=PROC):
    """(exe path, deleted) of ``pid``. The link is read, never followed: no access to the binary itself."""
    try:
        exe = decode(os.readlink(pid_path(pid, 'exe', root=root).encode()))
    except OSError:
        return None, False
    if exe.endswith(' (deleted)'):
        return exe[:-len(' (deleted)')], True
    return exe, False


def read_cgroup(pid, root=PROC):
    """(cgroup v2 path or the first path, logind session number or None) of ``pid``."""
    try:
        # Split before decoding: decode() escapes the newlines between the hierarchies.
        lines = [decode(line) for line in _read(pid_path(pid, 'cgroup', root=root)).split(b'\n')]
    except OSError:
        return None, None
    best = None
    for line in lines:
        path = line.split(':', 2)[-1]
        session = _logind_session(path)
        if session is not None:
            return path, session
        if line.startswith('0::') or (best is None and path):
            best = path
    return best, None


def _logind_session(path):
    """N of the ``user-UID.slice/session-N.scope`` in a cgroup path, or None.

    Nothing below a ``.service`` counts: systemd delegates ``user@UID.service`` (and any service with
    ``Delegate=``) to its user, who can name cgroups there ``session-N.scope`` after another user's login.
    """
    parent = ''
    for part in path.split('/'):
        if part.endswith('.service'):
            return None
        if (part.startswith('session-') and part.endswith('.scope')
                and parent.startswith('user-') and parent.endswith('.slice')):
            return part[len('session-'):-len('.scope')]
        parent = part
    return None


class ProcfsReader(object):
    """Reads everything from the procfs at ``root`` (``/proc``; a fake tree in unit tests)."""

    name = 'procfs'

    def __init__(self, root=PROC):
        self.root = root

    def path(self, pid, *parts):
        return pid_path(pid, *parts, root=self.root)

    def list_pids(self):
        return sorted(int(d) for d in os.listdir(self.root) if d.isdigit())

    def read_uids(self, pid):
        """(real, effective, saved, filesystem) UIDs from /proc/PID/status (not the owner of /proc/PID, which
        shows root for a non-dumpable process), or None."""
        for line in _read(self.path(pid, 'status')).split(b'\n'):
            if line.startswith(b'Uid:'):
                return tuple(int(x) for x in line.split()[1:5])
        return None

    def _base(self, pid):
        fields = parse_stat(_read(self.path(pid, 'stat')))
        fields['uids'] = self.read_uids(pid)
        fields['loginuid'] = _read_int(self.path(pid, 'loginuid'))
        fields['audit_session'] = _read_int(self.path(pid, 'sessionid'))
        fields['cgroup'], fields['logind_session'] = read_cgroup(pid, self.root)
        try:
            fields['netns'] = os.readlink(self.path(pid, 'ns', 'net'))
        except OSError:
            fields['netns'] = None
        return fields

    def read(self, pid):
        """A Proc for ``pid``, or None when it vanished while being read."""
        try:
            fields = self._base(pid)
            if fields['uids'] is None:
                return None
        except (OSError, ValueError, IndexError):
            return None
        exe, deleted = read_exe(pid, self.root)
        return Proc(pid=pid, cmdline=read_cmdline(pid, self.root), exe=exe, exe_deleted=deleted,
                    _reader=self, **fields)

    def read_fds(self, pid):
        d = self.path(pid, 'fd')
        sockets, files = set(), []
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
            elif target.startswith('/'):
                files.append(fd)
        # A pty master is known by what the kernel says of the open file, not by its path: a user can open the
        # ptmx device through a bind mount with any name (in a user and mount namespace of their own), and a
        # path is all readlink shows. The kernel writes ``tty-index`` into fdinfo for pty masters only (the
        # slave side has none). stat() on the fd would give the device number too, but stat reaches the file's
        # filesystem and hangs on a hung FUSE mount; fdinfo never leaves procfs. Only a process that also holds
        # a socket can be a server, so only its files are asked.
        masters = []
        if sockets:
            for fd in files:
                index = self._tty_index(pid, fd)
                if index is not None:
                    masters.append(index)
        return Fds(sockets, masters)

    def _tty_index(self, pid, fd):
        try:
            for line in _read(self.path(pid, 'fdinfo', fd)).split(b'\n'):
                if line.startswith(b'tty-index:'):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return None


class PsutilReader(ProcfsReader):
    """Takes the PID list, UIDs and parent from psutil; /proc for the rest.

    argv comes from the bounded /proc read in both readers: psutil reads whole command lines, and a user
    controls their length. psutil strips `` (deleted)`` from exe, so exe comes from /proc as well.
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
        except (psutil.Error, OSError, ValueError, IndexError):
            return None
        exe, deleted = read_exe(pid, self.root)
        return Proc(pid=pid, cmdline=read_cmdline(pid, self.root), exe=exe, exe_deleted=deleted,
                    _reader=self, **fields)


def make_reader(prefer_psutil=True, root=PROC):
    # psutil always reads the machine's own /proc; another root is only ever read directly.
    if prefer_psutil and HAS_PSUTIL and root == PROC:
        return PsutilReader()
    return ProcfsReader(root)


class Snapshot(object):
    """The process table at one moment, with the indexes discovery needs.

    ``previous``: an earlier snapshot whose records are reused for processes that are still the same
    (same PID and start time), so a rescan reads two small files per known process instead of eight.
    """

    def __init__(self, reader=None, pids=None, previous=None):
        self.reader = reader or make_reader()
        self.procs = {}
        for pid in (pids if pids is not None else self.reader.list_pids()):
            p = self._refresh(previous.procs.get(pid)) if previous is not None and pid in previous.procs else None
            if p is None:
                p = self.reader.read(pid)
            if p is not None:
                self.procs[pid] = p
        self.children = {}
        for p in self.procs.values():
            self.children.setdefault(p.ppid, []).append(p.pid)
        self._sockets = {}
        self._ns_cache = {}
        self._index = None

    def _refresh(self, old):
        """``old`` updated from /proc/PID/stat and status when it is still the same process, else None."""
        try:
            fields = parse_stat(_read(self.reader.path(old.pid, 'stat')))
            if fields['start_ticks'] != old.start_ticks:
                return None
            uids = self.reader.read_uids(old.pid)
        except (OSError, ValueError, IndexError):
            return None
        if uids is None:
            return None
        kw = dict((k, getattr(old, k)) for k in Proc.__slots__)
        kw.update(fields)
        kw['uids'] = uids
        kw['_fds'] = None
        return Proc(**kw)

    def __iter__(self):
        return iter(sorted(self.procs.values(), key=lambda p: p.pid))

    def __len__(self):
        return len(self.procs)

    def get(self, pid):
        return self.procs.get(pid)

    @property
    def root(self):
        return self.reader.root

    def by(self, label, value):
        """Processes whose ``label`` (``sid``, ``tty``, ``audit_session``, ``cgroup`` or ``loginuid``) is ``value``."""
        if self._index is None:
            self._index = dict((k, {}) for k in ('sid', 'tty', 'audit_session', 'cgroup', 'loginuid'))
            for p in self.procs.values():
                for k, idx in self._index.items():
                    idx.setdefault(getattr(p, k), []).append(p)
        return self._index[label].get(value, ())

    def _ns(self, pid, kind):
        key = (pid, kind)
        if key not in self._ns_cache:
            try:
                self._ns_cache[key] = os.readlink(self.reader.path(pid, 'ns', kind))
            except OSError:
                self._ns_cache[key] = None
        return self._ns_cache[key]

    def mount_ns(self, pid):
        """The mount namespace of ``pid`` (read on first use): which devpts its ``pts/N`` is."""
        return self._ns(pid, 'mnt')

    def pid_ns(self, pid):
        return self._ns(pid, 'pid')

    def userns_owner(self, pid):
        """UID that created the user namespace of ``pid`` (NS_GET_OWNER_UID), or None."""
        key = (pid, 'owner')
        if key not in self._ns_cache:
            self._ns_cache[key] = _userns_owner(self.reader.path(pid, 'ns', 'user'))
        return self._ns_cache[key]

    def descendants(self, pid):
        out, stack, seen = [], list(self.children.get(pid, ())), set([pid])
        while stack:
            c = stack.pop()
            if c in self.procs and c not in seen:
                seen.add(c)
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
            table = read_socket_table(proc.pid, proto, self.root)
            if table is None:
                # This process died mid-read: its answer is empty, the namespace's stays unknown for the next.
                return {}
            self._sockets[key] = table
        return self._sockets[key]


# ioctl(2) on a namespace file: _IO(0xb7, 0x4), the UID that owns a user namespace (Linux 4.11+).
_NS_GET_OWNER_UID = 0xb704


def _userns_owner(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return struct.unpack('I', fcntl.ioctl(fd, _NS_GET_OWNER_UID, b'\0' * 4))[0]
    except OSError:
        return None    # the initial user namespace has no owner
    finally:
        os.close(fd)


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


def read_socket_table(pid, proto, root=PROC):
    """Parse /proc/PID/net/{proto}{,6}: keyed by inode, so sockets are found in the right netns.

    None when neither file could be read (the process is gone), which says nothing about the namespace.
    """
    table, read_any = {}, False
    for name in (proto, proto + '6'):
        try:
            lines = _read(pid_path(pid, 'net', name, root=root), 16 << 20).decode('ascii', 'replace').splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            cols = line.split()
            if len(cols) < 10:
                continue
            try:
                table[int(cols[9])] = (_hex_addr(cols[1]), _hex_addr(cols[2]))
            except ValueError:
                continue
    return table if read_any else None


# The st column of /proc/net/tcp: the kernel's TCP states (include/net/tcp_states.h).
TCP_STATES = {1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT1', 5: 'FIN_WAIT2', 6: 'TIME_WAIT',
              7: 'CLOSE', 8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN', 11: 'CLOSING', 12: 'NEW_SYN_RECV'}


def read_socket_states(pid, proto, root=PROC):
    """Like read_socket_table, with the state: inode -> (local (ip, port), remote (ip, port), state name).

    A UDP socket has no connection state; the kernel reports a connected one as ESTABLISHED and the rest as CLOSE.
    """
    table = {}
    for name in (proto, proto + '6'):
        try:
            lines = _read(pid_path(pid, 'net', name, root=root), 16 << 20).decode('ascii', 'replace').splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10:
                continue
            try:
                table[int(cols[9])] = (_hex_addr(cols[1]), _hex_addr(cols[2]), TCP_STATES.get(int(cols[3], 16), cols[3]))
            except ValueError:
                continue
    return table

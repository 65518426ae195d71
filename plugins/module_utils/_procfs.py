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
    # os.open/os.read, not open(): no buffered file object per read; this runs for every process of the host.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _read_fd(fd, limit)
    finally:
        os.close(fd)


def _read_fd(fd, limit):
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b''.join(chunks)


def _read_owned(path):
    """(contents, owner UID) of /proc/PID/stat in one open: procfs gives its files the owner of /proc/PID.

    One read(2): the kernel formats the whole stat line (well under 4 KiB: comm is at most 64 bytes, the rest
    numbers) at once.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096), os.fstat(fd).st_uid
    finally:
        os.close(fd)


def _read_number(path):
    """An integer file such as /proc/PID/loginuid (one read(2) of a few bytes), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return int(os.read(fd, 64).strip() or -1)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


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


# Fields read only when first asked for (see ``Proc``): the file each one comes from.
_LAZY = {'uids': 'status', 'exe': 'exe', 'exe_deleted': 'exe', 'cmdline': 'cmdline', 'cgroup': 'cgroup',
         'logind_session': 'cgroup', 'netns': 'netns'}
_UNREAD = object()


class Proc(object):
    """One process as seen at snapshot time.

    What every process needs to be placed (``stat``: name, parent, session, terminal, start time; the owner of
    ``/proc/PID``; loginuid and audit session) is read up front. The rest (UIDs from ``status``, exe, argv,
    cgroup, network namespace) is read when first asked for, so a snapshot that only needs a few users' processes
    in full reads the rest of the table cheaply. ``fds`` is read lazily too (only candidates need it).
    """

    __slots__ = ('pid', 'ppid', 'name', 'state', 'pgrp', 'sid', 'tty_nr', 'start_ticks', 'loginuid',
                 'audit_session', 'owner', '_uids', '_exe', '_exe_deleted', '_cmdline', '_cgroup', '_logind_session',
                 '_netns', '_fds', '_reader')

    def __init__(self, **kw):
        for k in self.__slots__:
            if k.startswith('_') and k[1:] in _LAZY:
                setattr(self, k, kw.get(k[1:], _UNREAD))
            else:
                setattr(self, k, kw.get(k))

    def _lazy(self, field):
        value = getattr(self, '_' + field)
        if value is _UNREAD:
            self._reader.load(self, _LAZY[field])
            value = getattr(self, '_' + field)
        return value

    def loaded(self, field):
        """True when ``field`` has been read (a rescan carries read fields over, and only those)."""
        return getattr(self, '_' + field) is not _UNREAD

    uids = property(lambda self: self._lazy('uids'), lambda self, v: setattr(self, '_uids', v))
    exe = property(lambda self: self._lazy('exe'), lambda self, v: setattr(self, '_exe', v))
    exe_deleted = property(lambda self: self._lazy('exe_deleted'), lambda self, v: setattr(self, '_exe_deleted', v))
    cmdline = property(lambda self: self._lazy('cmdline'), lambda self, v: setattr(self, '_cmdline', v))
    cgroup = property(lambda self: self._lazy('cgroup'), lambda self, v: setattr(self, '_cgroup', v))
    logind_session = property(lambda self: self._lazy('logind_session'),
                              lambda self, v: setattr(self, '_logind_session', v))
    netns = property(lambda self: self._lazy('netns'), lambda self, v: setattr(self, '_netns', v))

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

    def may_run_as(self, uids):
        """False when the process runs as none of ``uids`` (real or effective), decided from the owner of
        ``/proc/PID`` where that is enough, without reading ``status``.

        The kernel gives ``/proc/PID`` the effective UID of a dumpable process and root otherwise; a change of
        credentials (setuid exec, setresuid) makes a process non-dumpable. So an owner other than root and
        ``uids`` is the effective UID, and the real UID is the same unless a program of that other user made itself
        dumpable again (prctl) after taking a real UID of ``uids``; such a process is taken for the other user's
        (scope ``all`` still reaches it: its kill(-1) as the user signals every process with the user's real UID).
        Root-owned processes, and any whose UIDs were read, are decided by ``status``.
        """
        if self._uids is _UNREAD and self.owner is not None and self.owner != 0 and self.owner not in uids:
            return False
        return any(self.has_uid(u) for u in uids)

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

    def read_light(self, pid, previous=None):
        """A Proc for ``pid`` with what every process needs (stat, the owner of /proc/PID, loginuid, audit
        session); the rest is read on first use (``load``). None when it is gone.

        ``previous``: this PID's record from an earlier snapshot. While it is the same process (same start time)
        its loginuid and audit session are kept, as every field but stat and UIDs always was on a rescan: a
        rescan reads one file per known process.
        """
        base = '%s/%d/' % (self.root, pid)   # not os.path.join: this runs for every process of the host
        try:
            raw, owner = _read_owned(base + 'stat')
            fields = parse_stat(raw)
        except (OSError, ValueError, IndexError):
            return None
        p = Proc.__new__(Proc)
        p.pid, p.owner, p._reader, p._fds = pid, owner, self, None
        p.name, p.state, p.ppid, p.pgrp = fields['name'], fields['state'], fields['ppid'], fields['pgrp']
        p.sid, p.tty_nr, p.start_ticks = fields['sid'], fields['tty_nr'], fields['start_ticks']
        if previous is not None and previous.start_ticks == p.start_ticks:
            p.loginuid, p.audit_session = previous.loginuid, previous.audit_session
        else:
            p.loginuid = _read_number(base + 'loginuid')
            # The kernel hands out an audit session only with a loginuid (audit_set_loginuid): where the loginuid
            # is unset, so is the session, and most processes of a crowded host were never logged in.
            p.audit_session = UNSET_ID if p.loginuid == UNSET_ID else _read_number(base + 'sessionid')
        p._uids = p._exe = p._exe_deleted = p._cmdline = p._cgroup = p._logind_session = p._netns = _UNREAD
        return p

    def load_uids(self, proc):
        """Read ``proc``'s UIDs; False when they cannot be read (it is gone)."""
        try:
            uids = self.read_uids(proc.pid)
        except (OSError, ValueError, IndexError):
            return False
        if uids is None:
            return False
        proc.uids = uids
        return True

    def complete(self, proc):
        """``proc`` with every field read, or None when it vanished (no status, or no UIDs in it)."""
        if not proc.loaded('uids') and not self.load_uids(proc):
            return None
        for what in ('exe', 'cmdline', 'cgroup', 'netns'):
            self.load(proc, what)
        return proc

    def read(self, pid):
        """A Proc for ``pid`` with every field read, or None when it vanished while being read."""
        p = self.read_light(pid)
        return self.complete(p) if p is not None else None

    def load(self, proc, what):
        """Read one lazy field group of ``proc`` (see ``_LAZY``); what cannot be read reads as absent.

        A later read may find the PID reused by another process. That can only mislabel this record: the engine
        addresses every process by pidfd and the start time from ``stat``, so it never signals the newcomer for it.
        """
        pid = proc.pid
        if what == 'status':
            try:
                uids = self.read_uids(pid)
            except (OSError, ValueError, IndexError):
                uids = None
            # Gone since the first pass: the owner of /proc/PID is what is left to go by (see Proc.may_run_as).
            proc.uids = uids or (proc.owner,) * 4
        elif what == 'exe':
            proc.exe, proc.exe_deleted = read_exe(pid, self.root)
        elif what == 'cmdline':
            proc.cmdline = read_cmdline(pid, self.root)
        elif what == 'cgroup':
            proc.cgroup, proc.logind_session = read_cgroup(pid, self.root)
        elif what == 'netns':
            try:
                proc.netns = os.readlink(self.path(pid, 'ns', 'net'))
            except OSError:
                proc.netns = None

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
    """Lists PIDs through psutil; every field comes from the same /proc reads as the procfs reader.

    On Linux psutil reads the very files this module reads (``stat``, ``status``), one ``Process`` object per PID
    on top: taking UIDs or parents from it made every snapshot slower and told nothing new. argv and exe always
    came from the bounded /proc reads (a user controls argv's length; psutil strips `` (deleted)`` from exe).
    """

    name = 'psutil'

    def list_pids(self):
        return sorted(psutil.pids())


def make_reader(prefer_psutil=True, root=PROC):
    # psutil always reads the machine's own /proc; another root is only ever read directly.
    if prefer_psutil and HAS_PSUTIL and root == PROC:
        return PsutilReader()
    return ProcfsReader(root)


class Snapshot(object):
    """The process table at one moment, with the indexes discovery needs.

    ``uids``: the users the caller is about (None: everyone). Then each PID is first read cheaply (``stat``, its
    owner, loginuid, audit session: what places it in trees, sessions and logins); only the processes that may be
    those users' (owned by them or by root, which may hide anyone) or that their logins started (loginuid) are
    read in full at once. Any other field of any process is read when discovery first asks for it, so a
    bystander tied to a session by its tree, terminal or labels is still described in full.

    ``previous``: an earlier snapshot whose read fields are carried over for processes that are still the same
    (same PID and start time): a rescan re-reads their ``stat``, loginuid, audit session and (where they were
    read) UIDs, never argv, exe, cgroup or namespace again.
    """

    def __init__(self, reader=None, pids=None, previous=None, uids=None):
        self.reader = reader or make_reader()
        want = None if uids is None else set(uids)
        self.procs = {}
        for pid in (pids if pids is not None else self.reader.list_pids()):
            old = previous.procs.get(pid) if previous is not None else None
            p = self._read(pid, old, want)
            if p is not None:
                self.procs[pid] = p
        self.children = {}
        for p in self.procs.values():
            self.children.setdefault(p.ppid, []).append(p.pid)
        self._sockets = {}
        self._ns_cache = {}
        self._index = {}

    def _read(self, pid, old, want):
        if old is None and want is None:
            return self.reader.read(pid)
        p = self.reader.read_light(pid, old)
        if p is None:
            return None
        if old is not None and old.start_ticks == p.start_ticks:
            return self._carry(p, old)
        if old is not None and want is None:
            return self.reader.read(pid)   # the PID was reused: a new process, read in full
        if p.owner in want or p.loginuid in want:
            return self.reader.complete(p)
        if p.owner == 0:
            # Root owns /proc/PID of root's processes and of every non-dumpable one (a setuid program the user
            # runs): their UIDs decide.
            if not self.reader.load_uids(p):
                return None
            if p.may_run_as(want):
                return self.reader.complete(p)
        return p

    def _carry(self, p, old):
        """``p`` (freshly read stat and labels) with the fields read for ``old``; UIDs read again if they were."""
        # Slot to slot: what was never read stays unread (this runs for every known process of every rescan).
        p._exe, p._exe_deleted, p._cmdline = old._exe, old._exe_deleted, old._cmdline
        p._cgroup, p._logind_session, p._netns = old._cgroup, old._logind_session, old._netns
        if old.loaded('uids') and not self.reader.load_uids(p):
            return None
        return p

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
        """Processes whose ``label`` (``sid``, ``tty``, ``audit_session``, ``cgroup`` or ``loginuid``) is ``value``.

        Each index is built on first use: only ``cgroup`` needs a read beyond the first pass, and only a logind
        session asks for it.
        """
        idx = self._index.get(label)
        if idx is None:
            idx = self._index[label] = {}
            for p in self.procs.values():
                idx.setdefault(getattr(p, label), []).append(p)
        return idx.get(value, ())

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

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A fake procfs written from data, so discovery and planning can be tested without root or real processes.

``ProcfsReader(root)`` and ``ExeJudge(root)`` read ``ROOT/PID/...`` as they read ``/proc``. ``FakeProcfs``
writes the same files in the kernel's formats: ``stat`` (52 fields, starttime the 22nd), ``status``,
``loginuid``, ``sessionid``, ``cgroup``, ``cmdline``, ``environ``, the ``exe``, ``ns/net`` and ``fd/N`` links,
``fdinfo/N`` (``tty-index``), ``net/{udp,tcp}{,6}`` (inode in column 10), and ``ROOT/stat`` (``btime``).

A topology is data: one ``Spec`` per process, usually made by ``spawn``, which copies what a child keeps
across fork and exec (user, session, process group, terminal, audit session, cgroup, network namespace).
Nothing is on disk until ``build``; ``write`` and ``remove`` change one process afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import UNSET_ID, ProcfsReader, Snapshot
from ansible_collections.sessionguard.mosh.plugins.module_utils._sessions import ExeJudge

BTIME = 1700000000
SHM = '/dev/shm'
NETNS = 'net:[4026531840]'
PTMX = '/dev/ptmx'
# The kernel keeps 15 bytes of a process name (TASK_COMM_LEN - 1); a test must not rely on more.
COMM_MAX = 15
# What ExeJudge looks for: every mosh-server build carries the "MOSH CONNECT" line it prints.
MOSH_IMAGE = b'\x7fELF\x02\x01\x01' + b'\0' * 57 + b'\nMOSH CONNECT %d %s\n\0'
PLAIN_IMAGE = b'\x7fELF\x02\x01\x01' + b'\0' * 57 + b'GNU bash, version 5.2\0'
_STATES = {'R': 'running', 'S': 'sleeping', 'D': 'disk sleep', 'T': 'stopped', 't': 'tracing stop',
           'Z': 'zombie', 'X': 'dead', 'I': 'idle'}
_NET_HEADER = {
    'udp': '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops',
    'tcp': '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
}


def pts(n):
    """stat field 7 (tty_nr) of /dev/pts/N: major 136, minor N, the minor's high bits above bit 20."""
    return (n & 0xff) | (136 << 8) | ((n & ~0xff) << 12)


def scope(uid, session):
    """/proc/PID/cgroup of a process in logind's scope for login ``session`` of ``uid`` (cgroup v2)."""
    return '0::/user.slice/user-%d.slice/session-%s.scope\n' % (uid, session)


def _bytes(value):
    return value if isinstance(value, bytes) else value.encode('utf-8', 'surrogateescape')


def _hex_addr(ip, port):
    """The /proc/net encoding: the address as host-order 32-bit words (little endian here), then the port."""
    if ':' in ip:
        raw = socket.inet_pton(socket.AF_INET6, ip)
        raw = b''.join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    else:
        raw = socket.inet_aton(ip)[::-1]
    return '%s:%04X' % (raw.hex().upper(), port)


@dataclass(frozen=True)
class Sock:
    """An open socket: ``socket:[inode]`` in fd/, and a row of net/``proto`` (none for ``unix``)."""

    inode: int
    proto: str = 'udp'      # udp, udp6, tcp, tcp6 or unix
    local: Tuple[str, int] = ('0.0.0.0', 0)
    remote: Tuple[str, int] = ('0.0.0.0', 0)


@dataclass(frozen=True)
class Ptmx:
    """An open pty master: its path in fd/ (``/dev/ptmx`` unless opened through another name), ``tty-index: N``
    in fdinfo/ for the /dev/pts/N it drives."""

    index: int
    path: str = PTMX


@dataclass
class Spec:
    """One process. ``None`` in sid, pgrp, euid and argv means: pid, sid, uid and [comm]."""

    pid: int
    ppid: int = 1
    uid: int = 0
    euid: Optional[int] = None
    comm: Any = b'sh'                   # str or bytes, cut to COMM_MAX bytes as the kernel does
    argv: Optional[List[Any]] = None    # str or bytes items
    state: str = 'S'
    sid: Optional[int] = None
    pgrp: Optional[int] = None
    tty: Optional[int] = None           # N of the controlling terminal /dev/pts/N
    start: int = 0                      # ticks since boot (stat field 22)
    loginuid: int = UNSET_ID
    sessionid: int = UNSET_ID
    cgroup: Any = '0::/\n'              # the whole /proc/PID/cgroup text
    exe: Any = None                     # link target; None: no link (kernel threads, zombies)
    netns: str = NETNS
    fds: List[Any] = field(default_factory=list)     # Sock, Ptmx or a path, as fd 3, 4, ...
    environ: Optional[Dict[str, Any]] = None
    dumpable: Optional[bool] = None     # None: unless its UIDs differ (a setuid program is not dumpable)
    tag: Optional[str] = None           # what a test asserts about; not written anywhere

    def __post_init__(self):
        if self.sid is None:
            self.sid = self.pid
        if self.pgrp is None:
            self.pgrp = self.sid
        if self.euid is None:
            self.euid = self.uid
        if self.argv is None:
            self.argv = [self.comm]
        if self.dumpable is None:
            self.dumpable = self.uid == self.euid

    @property
    def owner(self):
        """The owner the kernel gives /proc/PID and its files: the effective UID, root when not dumpable."""
        return self.euid if self.dumpable and not self.kernel_thread else 0

    @property
    def kernel_thread(self):
        return self.pid == 2 or self.ppid == 2

    def stat(self):
        tty_nr = pts(self.tty) if self.tty is not None else 0
        fields = [self.state, self.ppid, self.pgrp, self.sid, tty_nr,
                  self.pgrp if self.tty is not None else -1,       # 8 tpgid
                  0x208040 if self.kernel_thread else 0x400100,    # 9 flags (PF_KTHREAD for kernel threads)
                  120, 0, 0, 0, 3, 1, 0, 0,                        # 10-17 faults, utime, stime
                  20, 0, 1, 0,                                     # 18-21 priority, nice, threads, itrealvalue
                  self.start,                                      # 22 starttime
                  8851456, 1024, 18446744073709551615,             # 23-25 vsize, rss, rsslim
                  1, 1, 0, 0, 0,                                   # 26-30 code, stack, esp, eip
                  0, 0, 3670016, 1266777851, 1, 0, 0,              # 31-37 signals, wchan, nswap
                  17, 0, 0, 0, 0, 0, 0,                            # 38-44 exit_signal ... cguest_time
                  0, 0, 0, 0, 0, 0, 0, 0]                          # 45-52 data, brk, args, env, exit_code
        return b'%d (%s) %s\n' % (self.pid, _bytes(self.comm)[:COMM_MAX], ' '.join(map(str, fields)).encode())

    def status(self):
        # status escapes the name (stat does not): a newline in comm cannot forge the Uid: line here.
        name = _bytes(self.comm)[:COMM_MAX].replace(b'\\', b'\\\\').replace(b'\n', b'\\n')
        gid = self.uid
        lines = [b'Name:\t' + name, b'Umask:\t0022',
                 ('State:\t%s (%s)' % (self.state, _STATES.get(self.state, '?'))).encode(),
                 b'Tgid:\t%d' % self.pid, b'Ngid:\t0', b'Pid:\t%d' % self.pid, b'PPid:\t%d' % self.ppid,
                 b'TracerPid:\t0',
                 b'Uid:\t%d\t%d\t%d\t%d' % (self.uid, self.euid, self.euid, self.euid),
                 b'Gid:\t%d\t%d\t%d\t%d' % (gid, gid, gid, gid),
                 b'FDSize:\t64', b'Groups:\t', b'Threads:\t1']
        return b'\n'.join(lines) + b'\n'


class FakeProcfs(object):
    """Specs of a process table and the procfs written from them under ``base``/proc."""

    def __init__(self, base, btime=BTIME):
        self.base = str(base)
        self.root = os.path.join(self.base, 'proc')
        self.bindir = os.path.join(self.base, 'bin')
        os.makedirs(self.root)
        os.makedirs(self.bindir)
        self.btime = btime
        self.specs = {}
        self._written = {}      # pid -> what its directory was written from
        self._pid = 300
        self._inode = 40000
        self._tick = 500
        self._port = 60000
        self.mosh_exe = self.binary('mosh-server', MOSH_IMAGE)
        self.bash_exe = self.binary('bash', PLAIN_IMAGE)
        with open(os.path.join(self.root, 'stat'), 'w') as f:
            f.write('cpu  1 2 3 4 5 6 7 0 0 0\nintr 0\nctxt 0\nbtime %d\nprocesses 1\n' % btime)

    # --- specs ----------------------------------------------------------------------------
    def add(self, pid=None, **kw):
        """A process; pid and start time are the next free ones unless given."""
        if pid is None:
            while self._pid in self.specs:
                self._pid += 1
            pid = self._pid
        self._tick += 1
        kw.setdefault('start', self._tick)
        spec = Spec(pid=pid, **kw)
        self.specs[pid] = spec
        return spec

    def spawn(self, parent, comm, setsid=False, daemon=False, **kw):
        """A child of ``parent`` with what fork and exec keep; ``kw`` overrides any of it.

        ``setsid``: it leads a new session, without a terminal. ``daemon``: it double-forked, so it also
        has init for its parent (the middle process is gone).
        """
        keep = dict(ppid=parent.pid, uid=parent.uid, euid=parent.euid, sid=parent.sid, pgrp=parent.pgrp,
                    tty=parent.tty, loginuid=parent.loginuid, sessionid=parent.sessionid,
                    cgroup=parent.cgroup, netns=parent.netns, exe=parent.exe)
        pid = kw.pop('pid', None)
        if 'uid' in kw:
            keep['euid'] = kw['uid']
        if setsid or daemon:
            keep.update(sid=None, pgrp=None, tty=None)
        if daemon:
            keep['ppid'] = 1
        keep.update(kw)
        return self.add(pid=pid, comm=comm, **keep)

    def binary(self, name, data):
        path = os.path.join(self.bindir, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def sock(self, proto='udp', local=None, remote=None):
        """A socket with a fresh inode; unbound and unconnected unless addresses are given."""
        self._inode += 1
        anywhere = ('::', 0) if proto.endswith('6') else ('0.0.0.0', 0)
        return Sock(self._inode, proto, tuple(local or anywhere), tuple(remote or anywhere))

    def mosh_login(self, uid, session, pty, tag=None):
        """A mosh login as mosh-server leaves it: the server daemonized (parent init, its own session)
        holding its UDP socket and the pty master, the shell leading a session on /dev/pts/``pty``.

        ``session``: the login's audit session id, also its logind scope; None for a host without
        pam_loginuid and pam_systemd (a container, say). Returns (server, shell).
        """
        self._port += 1
        login = {} if session is None else dict(loginuid=uid, sessionid=session, cgroup=scope(uid, session))
        server = self.add(ppid=1, uid=uid, comm='mosh-server', exe=self.mosh_exe, tag=tag,
                          argv=['mosh-server', 'new', '-s', '-c', '256', '-l', 'LANG=C.UTF-8'],
                          fds=[self.sock('udp', ('0.0.0.0', self._port)), Ptmx(pty)], **login)
        shell = self.spawn(server, 'bash', setsid=True, tty=pty, argv=['-bash'], exe=self.bash_exe, fds=[], tag=tag)
        return server, shell

    def pids(self, *tags):
        return set(s.pid for s in self.specs.values() if s.tag in tags)

    # --- disk -----------------------------------------------------------------------------
    def build(self):
        """Write every process not yet written as it now is; returns the procfs root."""
        tables = self._net_tables()
        for pid in set(self._written) - set(self.specs):
            self.remove(pid)
        for spec in self.specs.values():
            if self._written.get(spec.pid) != self._key(spec, tables):
                self.write(spec, tables)
        return self.root

    @staticmethod
    def _key(spec, tables):
        return repr(spec), [tables.get((spec.netns, p)) for p in ('udp', 'udp6', 'tcp', 'tcp6')] if spec.fds else None

    def _net_tables(self):
        """net/PROTO text per network namespace: what every process in it sees."""
        rows = {}
        for s in self.specs.values():
            for fd in s.fds:
                if isinstance(fd, Sock) and fd.proto != 'unix':
                    rows.setdefault((s.netns, fd.proto), []).append((fd, s.uid))
        tables = {}
        for (netns, proto), socks in rows.items():
            lines = [_NET_HEADER[proto.rstrip('6')]]
            for i, (sk, uid) in enumerate(socks):
                st = 7 if proto.startswith('udp') else (1 if sk.remote[1] else 10)
                lines.append('%4d: %s %s %02X 00000000:00000000 00:00000000 00000000 %5d        0 %d 2 0000000000000000 0'
                             % (i, _hex_addr(*sk.local), _hex_addr(*sk.remote), st, uid, sk.inode))
            tables[(netns, proto)] = ('\n'.join(lines) + '\n').encode()
        return tables

    def write(self, spec, tables=None):
        """(Re)write one process directory, as if ``spec`` had just been read from the kernel."""
        if tables is None:
            tables = self._net_tables()
        self.specs[spec.pid] = spec
        self._written[spec.pid] = self._key(spec, tables)
        d = os.path.join(self.root, str(spec.pid))
        if os.path.lexists(d):
            shutil.rmtree(d)
        os.mkdir(d)
        zombie = spec.state in ('Z', 'X')
        put = _writer(d)
        put('stat', spec.stat())
        if spec.owner:
            os.chown(d, spec.owner, -1)
            os.chown(os.path.join(d, 'stat'), spec.owner, -1)
        put('status', spec.status())
        put('loginuid', b'%d' % spec.loginuid)
        put('sessionid', b'%d' % spec.sessionid)
        put('cgroup', _bytes(spec.cgroup))
        # The kernel shows no argv, environment or image for a zombie or a kernel thread, no namespaces for a zombie.
        bare = zombie or spec.kernel_thread
        put('cmdline', b'' if bare else b''.join(_bytes(a) + b'\0' for a in spec.argv))
        # Left out when empty, and fdinfo/ when there are no descriptors: a missing file reads as an empty
        # one here, and 20,000 processes are written faster.
        if spec.environ and not bare:
            put('environ', b''.join(_bytes(k) + b'=' + _bytes(v) + b'\0' for k, v in spec.environ.items()))
        if spec.exe is not None and not bare:
            os.symlink(_bytes(spec.exe), os.path.join(d, 'exe').encode())
        if not zombie:
            os.mkdir(os.path.join(d, 'ns'))
            os.symlink(spec.netns, os.path.join(d, 'ns', 'net'))
        os.mkdir(os.path.join(d, 'fd'))
        if spec.fds and not zombie:
            os.mkdir(os.path.join(d, 'fdinfo'))
        protos = set()
        for n, fd in enumerate([] if zombie else spec.fds, 3):
            info = b'pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t%d\n' % n
            if isinstance(fd, Sock):
                target = 'socket:[%d]' % fd.inode
                protos.add(fd.proto.rstrip('6'))
            elif isinstance(fd, Ptmx):
                target = fd.path
                info += b'tty-index:\t%d\n' % fd.index
            else:
                target = fd
            os.symlink(target, os.path.join(d, 'fd', str(n)))
            put(os.path.join('fdinfo', str(n)), info)
        protos.discard('unix')
        if protos:
            # Every process in a namespace sees the namespace's whole table, not only its own sockets.
            os.mkdir(os.path.join(d, 'net'))
            for proto in ('udp', 'udp6', 'tcp', 'tcp6'):
                put(os.path.join('net', proto), tables.get((spec.netns, proto), _NET_HEADER[proto.rstrip('6')].encode() + b'\n'))

    def remove(self, pid, *names):
        """The process exits (its directory goes), or only ``names`` inside it go (an exit half seen)."""
        d = os.path.join(self.root, str(pid))
        if not names:
            shutil.rmtree(d)
            self.specs.pop(pid, None)
            self._written.pop(pid, None)
        for name in names:
            path = os.path.join(d, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    # --- readers --------------------------------------------------------------------------
    def reader(self):
        return ProcfsReader(self.root)

    def judge(self):
        return ExeJudge(self.root, timeout=10.0)

    def snapshot(self, pids=None, previous=None):
        return Snapshot(self.reader(), pids=pids, previous=previous)


@contextlib.contextmanager
def scratch(fallback):
    """A directory for a fake procfs: on tmpfs where there is one, else ``fallback``.

    20,000 fake processes are some 250,000 files; on a busy disk writing them takes minutes, not seconds.
    """
    if os.path.isdir(SHM) and os.access(SHM, os.W_OK):
        d = tempfile.mkdtemp(prefix='sg-fakeproc-', dir=SHM)
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        yield str(fallback)


def _writer(d):
    def put(name, data):
        with open(os.path.join(d, name), 'wb') as f:
            f.write(data)
    return put


def base_host(fp, bystander=1001):
    """What every fake host runs besides what a test is about, all tagged ``host``: init, kernel threads,
    system daemons, the sshd listener, and another user's mosh login with a nohup job. A plan for any other
    user must leave all of it alone. Returns the sshd listener (the parent of sshd connections).
    """
    fp.add(pid=1, ppid=0, comm='systemd', argv=['/sbin/init', 'splash'], exe='/usr/lib/systemd/systemd',
           cgroup='0::/init.scope\n', tag='host')
    fp.add(pid=2, ppid=0, sid=0, pgrp=0, comm='kthreadd', tag='host')
    for i in range(3):
        fp.add(pid=3 + i, ppid=2, sid=0, pgrp=0, comm='kworker/%d:0H' % i, state='I', tag='host')
    for name in ('systemd-journald', 'cron', 'rsyslogd'):
        fp.add(comm=name, exe='/usr/sbin/' + name, cgroup='0::/system.slice/%s.service\n' % name, tag='host')
    sshd = fp.add(comm='sshd', exe='/usr/sbin/sshd', argv=['sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups'],
                  cgroup='0::/system.slice/ssh.service\n', fds=[fp.sock('tcp', ('0.0.0.0', 22))], tag='host')
    _server, shell = fp.mosh_login(bystander, session=2, pty=0, tag='host')
    fp.spawn(shell, 'sleep', ppid=1, argv=['sleep', 'infinity'], tag='host')
    return sshd

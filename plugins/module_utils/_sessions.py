# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Session discovery on top of a process snapshot: mosh servers, SSH logins, and what is tied to them.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

A process is tied to a session when it descends from the session's leader, shares its pty session
or terminal, or carries the same kernel audit session id (set by pam_loginuid at login and inherited
across fork, setsid, daemonizing and sudo) or the same logind ``session-N.scope``.
"""

from __future__ import annotations

import marshal
import os
import re
import select
import signal
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import PROC, UNSET_ID, open_fds, pid_path

MOSH_NAME = 'mosh-server'
# Every mosh-server build prints this line; copies, renames and private builds keep it.
MOSH_SIGNATURE = b'MOSH CONNECT'
SSHD_NAMES = ('sshd', 'sshd-session', 'sshd-auth')
# "sshd: bob [priv]", "sshd-session: bob@pts/0", "sshd: bob@notty" (OpenSSH before and after 9.8).
_SSHD_TITLE = re.compile(r'^(?P<prog>sshd(?:-session|-auth)?): (?P<user>[^\s@\[]+)(?:@(?P<tty>\S+))?(?P<tag> \[\w+\])?')
_SIG_SCAN_LIMIT = 64 << 20
# Seconds any one access to a user's binary may take before the process is judged without it.
IO_TIMEOUT = 3.0


def _has_signature(path):
    try:
        with open(path, 'rb') as f:
            tail = b''
            read = 0
            while read < _SIG_SCAN_LIMIT:
                chunk = f.read(1 << 20)
                if not chunk:
                    return False
                if MOSH_SIGNATURE in tail + chunk:
                    return True
                tail = chunk[-len(MOSH_SIGNATURE):]
                read += len(chunk)
    except OSError:
        return False
    return False


def _stat_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Hung(Exception):
    """A file system call on a user's binary did not answer in time (a hung NFS or FUSE mount)."""


def _close_fds_except(keep):
    """In a helper child: stdio on /dev/null and no other inherited descriptor but ``keep``.

    Ansible waits for the module's stdout and stderr to close, and the watchdog for its pipe: a helper stuck
    on a hung mount must hold none of them.
    """
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        fds = open_fds()
    except OSError:
        fds = list(range(3, 65536))
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def bounded_call(fn, args, timeout):
    """``fn(*args)`` in a forked helper process, given at most ``timeout`` seconds. Raises Hung when late.

    A call on a binary on a FUSE or NFS mount whose server never answers blocks in the kernel, often in an
    uninterruptible wait (a FUSE request the server already holds, a page lock held by a read it never
    answered) that not even SIGKILL ends. A thread of the module blocked there would keep the module's process
    from ever exiting, and Ansible waits for that exit. So the call runs in a child that holds no descriptor
    but its result pipe; a late child gets SIGKILL (it dies when the kernel lets it) and is left behind.
    ``fn`` returns and raises only what ``marshal`` can carry back (an exception comes back as an OSError).
    """
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # pragma: no cover - runs in the helper child
        code = 0
        try:
            _close_fds_except(w)
            try:
                out = ('value', fn(*args))
            except Exception as e:  # noqa: B902 - handed to the caller
                out = ('error', '%s: %s' % (type(e).__name__, e))
            os.write(w, marshal.dumps(out))
        except BaseException:  # noqa: B902 - never return into the module's code
            code = 1
        os._exit(code)
    os.close(w)
    data = b''
    try:
        poller = select.poll()
        poller.register(r, select.POLLIN | select.POLLHUP)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(int(min(left, 60.0) * 1000) + 1):
                if time.monotonic() < deadline:
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, os.WNOHANG)
                except OSError:
                    pass
                raise Hung('no answer within %g s' % timeout)
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass
    try:
        kind, value = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        raise OSError('the helper process for %s died without an answer' % getattr(fn, '__name__', fn))
    if kind == 'error':
        raise OSError(value)
    return value


class ExeJudge(object):
    """Decides whether a process image is a mosh-server, caching by file identity.

    The binary is a user's file: every access to it (stat, read, realpath) is bounded in time. A process
    whose binary could not be judged is flagged in ``unreadable`` and judged on what could be read.
    """

    def __init__(self, root=PROC, timeout=IO_TIMEOUT):
        self.root = root
        self.timeout = timeout
        self._cache = {}
        self.unreadable = {}    # pid -> why its binary could not be read
        self.identified = {}    # pid -> how a server was recognised: signature, name, unreadable, behaviour
        self._hung_devs = set()
        self.system = []
        for d in os.environ.get('PATH', '/usr/bin:/bin').split(':') + ['/usr/bin', '/usr/local/bin']:
            path = os.path.join(d, MOSH_NAME)
            if os.path.isfile(path):
                real = os.path.realpath(path)
                if real not in self.system:
                    self.system.append(real)

    def _exe(self, pid):
        return pid_path(pid, 'exe', root=self.root)

    def _io(self, proc, fn, *args):
        """``fn(*args)`` bounded in time; None (and the process flagged) when it hung or failed."""
        try:
            return bounded_call(fn, args, self.timeout)
        except Hung as e:
            self.unreadable[proc.pid] = 'its binary %s did not answer: %s' % (proc.exe, e)
            return None

    def _key(self, proc):
        if proc.pid in self.unreadable:
            return None
        return self._io(proc, _stat_key, self._exe(proc.pid))

    def is_mosh(self, proc):
        """True, False, or None when the binary could not be read (the process is flagged)."""
        key = self._key(proc)
        if key is None:
            if proc.pid in self.unreadable:
                return None
            if proc.name == MOSH_NAME:
                self.identified[proc.pid] = 'name'
                return True
            return False
        if key[0] in self._hung_devs:
            self.unreadable[proc.pid] = 'its binary %s is on a file system that did not answer' % proc.exe
            return None
        if key not in self._cache:
            found = self._io(proc, _has_signature, self._exe(proc.pid))
            if found is None:
                self._hung_devs.add(key[0])
                return None
            self._cache[key] = found
        return self._cache[key]

    def same_image(self, a, b):
        ka, kb = self._key(a), self._key(b)
        return ka is not None and ka == kb

    def flagged(self):
        return [{'pid': pid, 'reason': why} for pid, why in sorted(self.unreadable.items())]

    def describe(self, proc):
        """How the server's binary and name compare with the installed mosh-server."""
        base = os.path.basename(proc.argv0.split(' ')[0]) if proc.argv0 else ''
        renamed = proc.name != MOSH_NAME or base != MOSH_NAME
        unreadable = proc.pid in self.unreadable
        copied = True if unreadable else None
        if copied is None:
            real = self._io(proc, os.path.realpath, proc.exe) if proc.exe else None
            copied = proc.exe is not None and real not in self.system
        if not copied and proc.exe and not proc.exe_deleted:
            copied = self._key(proc) != self._io(proc, _stat_key, proc.exe)
        return {'exe': proc.exe, 'exe_deleted': bool(proc.exe_deleted), 'renamed': renamed,
                'copied': bool(copied), 'exe_unreadable': unreadable,
                'suspicious': bool(renamed or copied or proc.exe_deleted or unreadable)}


def _label(value):
    return value if value not in (None, UNSET_ID, -1) else None


class Session(object):
    """A login to end or report: a mosh server, an SSH connection, or (scope all) the rest."""

    __slots__ = ('kind', 'uid', 'leader', 'members', 'tty', 'tty_pid', 'pty_index', 'child', 'identified_by',
                 'audit_session', 'logind_session', 'cgroup', '_snap')

    def __init__(self, kind, uid, leader, snap):
        self.kind = kind
        self.uid = uid
        self.leader = leader          # Proc, or None for the 'other' bucket
        self.members = []             # Procs tied to this session, leader first
        self.tty = None
        self.tty_pid = None           # a process of the session that holds ``tty``, in its mount namespace
        self.pty_index = None
        self.child = None             # mosh: the pty session leader (the shell, or the pre-exec copy)
        self.identified_by = None     # mosh: signature, name, unreadable or behaviour
        self.audit_session = _label(leader.audit_session) if leader else None
        self.logind_session = leader.logind_session if leader else None
        # logind ties compare the whole cgroup path: a container's ".../session-3.scope" is not the host's.
        self.cgroup = leader.cgroup if leader is not None and leader.logind_session else None
        self._snap = snap

    @property
    def pids(self):
        return [p.pid for p in self.members]

    def labels(self):
        """What later scans use to find processes tied to this session after its leader is gone.

        Session ids come from the user's own processes only: a bystander's shell that ran ``sudo -u bob job``
        shares its session id with bob's job, and must not be tied to bob by it. Processes tied to no login
        (``other``) lend no session id at all.
        """
        out = {'sids': set(), 'audit': set(), 'logind': set()}
        if self.kind != 'other':
            for p in self.members:
                if p.sid > 1 and p.has_uid(self.uid):
                    out['sids'].add(p.sid)
        if self.audit_session is not None:
            out['audit'].add(self.audit_session)
        if self.cgroup:
            out['logind'].add(self.cgroup)
        return out

    def set_tty(self, proc):
        """The session's terminal is the one ``proc`` (a process of the session's user) holds."""
        self.tty, self.tty_pid = proc.tty, proc.pid


def is_sshd_connection(proc):
    """True for the privileged per-connection sshd process of an authenticated login."""
    # Root first: it is known for most processes without reading anything more (see Proc.may_run_as).
    if not proc.may_run_as((0,)) or proc.uid != 0:
        return False
    if proc.name not in SSHD_NAMES and os.path.basename(proc.exe or '') not in SSHD_NAMES:
        return False
    m = _SSHD_TITLE.match(proc.argv0)
    return bool(m) and m.group('tag') == ' [priv]'


class Discovery(object):
    """Finds sessions in one snapshot.

    ``uids``: only sessions of these users (None: every user). Which members may be ended, and which are the
    task's own chain, is the plan's business, not discovery's.
    """

    def __init__(self, snap, uids=None, judge=None):
        self.snap = snap
        self.uids = set(uids) if uids is not None else None
        self.judge = judge or ExeJudge()
        self.claimed = {}   # pid -> Session
        self.foreign = []   # processes of the users in other PID namespaces that are not theirs
        # PID 1's namespace is the host's. Where root may not read PID 1's namespaces (a sandbox's init), this
        # task's own stands in: it runs in the PID namespace whose processes it reads.
        self._host_pidns = snap.pid_ns(1) or snap.pid_ns('self')

    def _wanted(self, proc):
        if self.uids is not None and not proc.may_run_as(self.uids):
            return False
        return not self.is_foreign(proc)

    def is_foreign(self, proc):
        """A process of the user's UID in another PID namespace that nothing ties to the user.

        A UID is not a person across namespaces: a root-started container may run its workload as UID 1000. Such
        a process is the user's only when their login started it (loginuid), or it lives in a user namespace the
        user created (a rootless container of theirs). The rest is someone else's, reported and left alone.
        """
        ns = self.snap.pid_ns(proc.pid)
        if ns is None or self._host_pidns is None or ns == self._host_pidns:
            return False
        uid = proc.uid
        if _label(proc.loginuid) == uid or self.snap.userns_owner(proc.pid) == uid:
            return False
        return True

    # --- mosh -----------------------------------------------------------------------------
    def is_mosh_server(self, proc):
        """A process holding a UDP socket and a pty master: what a mosh-server holds.

        The image is a first filter, never the proof. A server launched through ld.so (``exe`` is ld.so), a
        packed or patched copy without mosh's signature, or a binary on a hung mount is still a remote-terminal
        server by what it does; ``judge.identified`` says how each one was recognised.
        """
        if proc.kernel_thread or proc.pid == 1 or proc.zombie:
            return False
        fds = proc.fds
        if not fds.pty_masters or not fds.sockets:
            return False
        udp = self.snap.socket_table(proc, 'udp')
        if not any(inode in udp for inode in fds.sockets):
            return False
        verdict = self.judge.is_mosh(proc)
        self.judge.identified.setdefault(proc.pid, 'signature' if verdict else 'unreadable' if verdict is None
                                         else 'behaviour')
        return True

    def mosh_servers(self):
        return [p for p in self.snap if self._wanted(p) and self.is_mosh_server(p)]

    def mosh_session(self, server):
        s = Session('mosh', server.uid, server, self.snap)
        kids = [self.snap.get(c) for c in self.snap.children.get(server.pid, ())]
        kids = [k for k in kids if k is not None]
        masters = server.fds.pty_masters
        for k in kids:
            if k.sid == k.pid:
                s.child = k
                break
        if s.child is None and kids:
            s.child = kids[0]
        if s.child is not None and s.child.tty and s.child.has_uid(server.uid):
            s.set_tty(s.child)
        elif masters:
            s.tty, s.tty_pid = 'pts/%d' % masters[0], server.pid
        s.pty_index = masters[0] if masters else None
        s.identified_by = self.judge.identified.get(server.pid)
        self._gather(s, roots=[server], sids={server.sid} | ({s.child.pid} if s.child else set()))
        return s

    # --- ssh ------------------------------------------------------------------------------
    def ssh_connections(self):
        out = []
        for p in self.snap:
            if not is_sshd_connection(p):
                continue
            uid = self._ssh_uid(p)
            if uid is not None and (self.uids is None or uid in self.uids):
                out.append((p, uid))
        return out

    def _ssh_uid(self, conn):
        """The user of an sshd connection: its loginuid, else its user-owned child."""
        if _label(conn.loginuid) is not None:
            return conn.loginuid
        for c in self.snap.descendants(conn.pid):
            p = self.snap.get(c)
            if p is not None and p.uid != 0:
                return p.uid
        return None

    def ssh_session(self, conn, uid):
        s = Session('ssh', uid, conn, self.snap)
        own = [p for p in (self.snap.get(c) for c in self.snap.descendants(conn.pid)) if p is not None and p.has_uid(uid)]
        for p in own:
            if p.tty:
                s.set_tty(p)
                break
        if s.tty is None:
            # No descendant holds a terminal (yet): the user's sshd names it, "sshd: bob@pts/3".
            for c in self.snap.children.get(conn.pid, ()):
                m = _SSHD_TITLE.match(self.snap.get(c).argv0) if self.snap.get(c) else None
                if m and m.group('tty') and m.group('tty') != 'notty':
                    s.tty, s.tty_pid = m.group('tty'), c
        # Only the user's own processes lend their session ids: a `sudo` pty or a root shell is not the login's.
        self._gather(s, roots=[conn], sids=set(p.sid for p in own))
        return s

    # --- shared ---------------------------------------------------------------------------
    def _gather(self, s, roots, sids):
        """Collect the session's members: trees, pty session, terminal, audit and logind labels."""
        sids = set(x for x in sids if x and x > 1)
        picked = {}

        def take(p):
            if p.pid in picked or p.pid == 1 or p.kernel_thread:
                return
            if p.pid in self.claimed and self.claimed[p.pid] is not s:
                return
            picked[p.pid] = p

        for r in roots:
            take(r)
        for sid in sids:
            for p in self.snap.by('sid', sid):
                take(p)
        if s.tty:
            # The same pts number in another mount namespace is another devpts (a container's): not this one.
            ns = self.snap.mount_ns(s.tty_pid) if s.tty_pid else None
            for p in self.snap.by('tty', s.tty):
                if ns is None or self.snap.mount_ns(p.pid) == ns:
                    take(p)
        if s.audit_session is not None:
            for p in self.snap.by('audit_session', s.audit_session):
                take(p)
        if s.cgroup:
            for p in self.snap.by('cgroup', s.cgroup):
                take(p)
        # Whatever descends from the leader or from one of the user's own members belongs to the session too
        # (one walk over all of them: linear even for a chain thousands deep). Another user's member lends no
        # descendants: a root shell's children may be anyone's, a side sshd's children other users' logins.
        stack = [pid for pid, p in picked.items() if p is s.leader or p.has_uid(s.uid)]
        while stack:
            for c in self.snap.children.get(stack.pop(), ()):
                if c not in picked and c in self.snap.procs:
                    take(self.snap.get(c))
                    if c in picked and self.snap.get(c).has_uid(s.uid):
                        stack.append(c)
        lead = [s.leader] if s.leader is not None and s.leader.pid in picked else []
        s.members = lead + sorted((p for p in picked.values() if p is not s.leader), key=lambda p: p.pid)
        for p in s.members:
            self.claimed[p.pid] = s

    def sessions(self, kinds=('mosh',)):
        """Sessions of the wanted users, mosh first so a process tied to both is reported as mosh."""
        out = []
        if 'mosh' in kinds:
            for server in self.mosh_servers():
                if server.pid not in self.claimed or self.claimed[server.pid].leader is server:
                    out.append(self.mosh_session(server))
        if 'ssh' in kinds:
            for conn, uid in self.ssh_connections():
                if conn.pid not in self.claimed:
                    out.append(self.ssh_session(conn, uid))
        return out

    def unclaimed(self, uid):
        """Live processes of ``uid`` that belong to no discovered session (foreign ones set aside)."""
        out = []
        for p in self.snap:
            if (p.may_run_as((uid,)) and p.pid not in self.claimed and not p.zombie
                    and not p.kernel_thread):
                if self.is_foreign(p):
                    if p not in self.foreign:
                        self.foreign.append(p)
                else:
                    out.append(p)
        return out

    def set_aside_foreign(self, uids):
        """Collect in ``foreign`` the users' processes in other PID namespaces (done by ``unclaimed`` too)."""
        for uid in sorted(uids):
            self.unclaimed(uid)

    def other_session(self, uid):
        s = Session('other', uid, None, self.snap)
        s.members = self.unclaimed(uid)
        for p in s.members:
            self.claimed[p.pid] = s
        return s

"""PID 1 of one fleet host: set the host up inside fresh namespaces, run sshd, reap orphans.

Started by :mod:`sgtest.fleet.lifecycle` as::

    unshare --pid --mount --uts --fork --mount-proc --propagation private --kill-child \\
        /usr/bin/python3 -I -S hostinit.py HOSTDIR/config.json

so this process is PID 1 of a new PID namespace, in a new (private) mount namespace
with its own /proc, and a new UTS namespace. Standard library only (it runs on the
system Python with ``-I -S``); it must not import sgtest.

Setup (all mounts are private to the host's mount namespace):

* reset the audit loginuid to "unset", like a freshly booted init, so that sshd's
  ``pam_loginuid`` gives every login a new loginuid/sessionid pair;
* hostname; mounts from the config (``/etc`` as a copy-on-write overlay of the fleet's
  /etc copy, bind mounts of ``/home``, ``/root``, ``/var/log``, ``/var/tmp``, finally ``/tmp``); a tmpfs on ``/run`` with ``/run/sshd``, ``/run/lock``
  and ``/run/utmp`` (root:utmp 0664); optional overlays that hide Python packages
  (whiteouts), e.g. psutil on a "no psutil" host;
* ``rsyslogd -n`` (when the config names it), listening on the host's /run/sgfleet/dev-log (where the
  machine's /dev/log points) and writing to the host's /var/log;
* ``sshd -D -e`` with its stderr on the host's sshd.log.

Supervision: reaps every child (orphans of the namespace are reparented here);
restarts sshd when it fails, except after exit status 255 (what sshd returns on
SIGTERM; Debian's ssh.service has ``RestartPreventExitStatus=255``). Signals are only
obeyed when they come from outside the namespace (``si_pid == 0``), so nothing running
on the host, root included, can shut it down by accident:

=========  ====================================================================
SIGTERM    shut down: SIGTERM to sshd, SIGKILL to everything else, reap, exit 0
SIGINT     same as SIGTERM
SIGHUP     forwarded to sshd (reload its configuration)
SIGUSR1    start sshd if it is not running
SIGUSR2    stop sshd (SIGTERM) and do not restart it
=========  ====================================================================
"""

import ctypes
import errno
import grp
import json
import os
import signal
import socket
import sys
import time

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

AUDIT_UNSET = "4294967295"
SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
RESTART_LIMIT = (5, 30.0)  # at most 5 automatic restarts of sshd in 30 seconds

_libc = ctypes.CDLL("libc.so.6", use_errno=True)  # not ctypes.util.find_library: it spawns ldconfig
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)


class Init(object):
    def __init__(self, cfg):
        self.cfg = cfg
        self.log_fh = open(cfg["log"], "a", buffering=1)
        # Opened before /tmp is covered by the host's own /tmp (the state dir may live there).
        self.sshd_log_fd = os.open(cfg["sshd_log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.sshd_pid = None
        self.sshd_wanted = True
        self.stopping = False
        self.restarts = []

    # ------------------------------------------------------------------ helpers
    def log(self, msg):
        self.log_fh.write("%s %s[1]: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), self.cfg["name"], msg))

    def mount(self, source, target, fstype=None, flags=0, data=None):
        def enc(v):
            return v.encode() if v is not None else None
        if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "mount(%r, %r, %r, %#x, %r): %s"
                          % (source, target, fstype, flags, data, os.strerror(err)))

    def bind(self, source, target, recursive=False, readonly=False):
        self.mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
        if readonly:
            self.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)

    def mount_entry(self, m):
        """A bind mount, or (with "fstype") a mount of that type with "data" as options."""
        if m.get("fstype"):
            self.mount(m["source"], m["target"], m["fstype"], 0, m.get("data"))
        else:
            self.bind(m["source"], m["target"], m.get("recursive", False), m.get("readonly", False))

    # ------------------------------------------------------------------ setup
    def reset_loginuid(self):
        try:
            with open("/proc/self/loginuid") as fh:
                current = fh.read().strip()
            if current != AUDIT_UNSET:
                with open("/proc/self/loginuid", "w") as fh:
                    fh.write(AUDIT_UNSET)
                self.log("loginuid reset from %s to unset" % current)
        except OSError as exc:
            self.log("could not reset loginuid: %s" % exc)

    def setup(self):
        cfg = self.cfg
        if os.getpid() != 1:
            raise RuntimeError("hostinit must run as PID 1 of a new PID namespace (got PID %d)" % os.getpid())
        self.reset_loginuid()
        socket.sethostname(cfg["hostname"])
        self.mount(None, "/", None, MS_REC | MS_PRIVATE)
        for m in cfg["binds"]:
            self.mount_entry(m)
        self.mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64m")
        os.mkdir("/run/sshd", 0o755)
        os.mkdir("/run/lock", 0o755)
        os.chmod("/run/lock", 0o1777)
        utmp_gid = grp.getgrnam("utmp").gr_gid  # from the host's own /etc/group
        fd = os.open("/run/utmp", os.O_WRONLY | os.O_CREAT, 0o664)
        os.fchown(fd, 0, utmp_gid)
        os.fchmod(fd, 0o664)
        os.close(fd)
        os.makedirs("/run/sgfleet", 0o755)
        for n, hide in enumerate(cfg.get("hide", [])):
            wdir = "/run/sgfleet/hide%d" % n
            os.mkdir(wdir, 0o755)
            for name in hide["names"]:
                os.mknod(os.path.join(wdir, name), 0o600 | 0o020000, os.makedev(0, 0))  # whiteout
            self.mount("overlay", hide["dir"], "overlay", 0, "lowerdir=%s:%s" % (wdir, hide["dir"]))
        for m in cfg.get("late_binds", []):
            self.mount_entry(m)
        self.log("host set up: hostname %s, address %s" % (cfg["hostname"], cfg["address"]))

    # ------------------------------------------------------------------ daemons
    @staticmethod
    def spawn(argv, stderr_fd, env=None):
        """Fork and exec a daemon of the host in a session of its own: default signal handling and mask (PID 1
        blocks and handles them), stdin/stdout on /dev/null, stderr to ``stderr_fd``, no other inherited fds."""
        pid = os.fork()
        if pid == 0:  # child
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                for s in SIGNALS:
                    signal.signal(s, signal.SIG_DFL)
                os.setsid()
                null = os.open("/dev/null", os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(stderr_fd, 2)
                os.closerange(3, 1024)
                if env is None:
                    os.execv(argv[0], argv)
                else:
                    os.execve(argv[0], argv, env)
            except BaseException as exc:  # pylint: disable=broad-except
                os.write(2, ("hostinit: cannot exec %s: %s\n" % (argv[0], exc)).encode())
            finally:
                os._exit(127)
        return pid

    # ------------------------------------------------------------------ syslog
    def start_syslogd(self):
        argv = self.cfg.get("syslogd")
        if not argv:
            return
        pid = self.spawn(argv, self.log_fh.fileno())
        self.log("started %s, pid %d" % (argv[0], pid))

    # ------------------------------------------------------------------ sshd
    def start_sshd(self):
        if self.sshd_pid is not None or self.stopping:
            return
        argv = self.cfg["sshd"]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        pid = self.spawn(argv, self.sshd_log_fd, env)
        self.sshd_pid = pid
        self.log("started sshd, pid %d" % pid)

    def stop_sshd(self):
        if self.sshd_pid is not None:
            try:
                os.kill(self.sshd_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def sshd_exited(self, status):
        self.log("sshd (pid %d) exited: %s" % (self.sshd_pid, describe(status)))
        self.sshd_pid = None
        if self.stopping or not self.sshd_wanted:
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 255:
            self.log("not restarting sshd after exit status 255 (SIGTERM); SIGUSR1 starts it again")
            return
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_LIMIT[1]] + [now]
        if len(self.restarts) > RESTART_LIMIT[0]:
            self.log("sshd failed %d times in %.0fs; giving up (SIGUSR1 starts it again)" % RESTART_LIMIT)
            return
        time.sleep(0.2)
        self.start_sshd()

    # ------------------------------------------------------------------ main loop
    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.sshd_pid:
                self.sshd_exited(status)

    def shutdown(self):
        self.stopping = True
        self.log("shutting down")
        self.stop_sshd()
        deadline = time.monotonic() + 2.0
        while self.sshd_pid is not None and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.02)
        try:
            os.kill(-1, signal.SIGKILL)  # every process of the namespace but PID 1
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        self.log("down")
        return 0

    def run(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        for s in SIGNALS:
            signal.signal(s, lambda *_a: None)  # a handler: PID 1 ignores default-action signals
        self.setup()
        self.start_syslogd()
        self.start_sshd()
        while True:
            info = signal.sigtimedwait(SIGNALS, 5.0)
            self.reap()
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            name = signal.Signals(info.si_signo).name
            if info.si_pid != 0:
                self.log("ignoring %s from PID %d inside the host" % (name, info.si_pid))
                continue
            if info.si_signo in (signal.SIGTERM, signal.SIGINT):
                return self.shutdown()
            if info.si_signo == signal.SIGHUP and self.sshd_pid is not None:
                os.kill(self.sshd_pid, signal.SIGHUP)
            elif info.si_signo == signal.SIGUSR1:
                self.sshd_wanted = True
                self.restarts = []
                self.start_sshd()
            elif info.si_signo == signal.SIGUSR2:
                self.sshd_wanted = False
                self.stop_sshd()


def describe(status):
    if os.WIFSIGNALED(status):
        return "killed by %s" % signal.Signals(os.WTERMSIG(status)).name
    return "exit status %d" % os.WEXITSTATUS(status)


def main(argv):
    with open(argv[1]) as fh:
        cfg = json.load(fh)
    init = Init(cfg)
    try:
        return init.run()
    except Exception as exc:  # pylint: disable=broad-except
        init.log("FATAL: %s: %s" % (type(exc).__name__, exc))
        if isinstance(exc, OSError) and exc.errno == errno.EPERM:
            init.log("(must run as root)")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

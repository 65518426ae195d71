"""A FUSE mount serving one binary whose reads can be made to hang (a dead NFS/FUSE server).

:class:`HangingFuse` runs a tiny FUSE server as a child process of the test, with Debian's
``/usr/bin/python3`` and its ``python3-fusepy`` (import name ``fusepy``; it is not in the .venv).
The server mounts ``fuse.sgtest-hang`` (``allow_other``, ``default_permissions``, read-only) on a
directory under the harness state dir and exposes one executable file, a copy of a binary
(``/usr/bin/mosh-server`` by default) held in memory. Reads are served normally until
:meth:`HangingFuse.hang`; from then on every ``read`` request blocks in the server until
:meth:`HangingFuse.release` (or teardown). Other requests (lookup, getattr, open) keep being
answered, so it is really the read that hangs.

The file is opened without ``keep_cache``: the kernel drops the file's page cache (and unmaps its
pages from processes running it) on every open, so a read after an open really reaches the
server, and a process executing the binary faults into the hung server on its next page fault.

The server talks to the test over its stdin/stdout, one line each way: ``hang`` -> ``hanging``,
``release`` -> ``released N``, ``status`` -> ``status reads=N blocked=N ever_blocked=N
state=serve|hang pids=P,P``. On EOF on stdin (the test process died) it releases every read and
unmounts itself.

:meth:`HangingFuse.stop` releases the blocked reads, unmounts (``fusermount3 -u``, else
``umount -l``), waits for the server to exit (SIGKILL after a deadline), removes the mount point
and raises :class:`FuseError` if anything is left.

This file is also the server: ``/usr/bin/python3 -I fuse.py serve MOUNTPOINT SOURCE NAME``
(``-I`` keeps this directory off ``sys.path``). Only the standard library is imported at the top.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

SERVER_PYTHON = "/usr/bin/python3"
FSTYPE = "fuse.sgtest-hang"


class FuseError(AssertionError):
    """The FUSE server did not start, did not answer, or left something behind."""


# --------------------------------------------------------------------------- test side
class HangingFuse:
    """One mount with one file ``name``: ``path`` is its full path. Use as a context manager or
    ``start()`` / ``stop()``."""

    def __init__(self, parent_dir: str, source: str = "/usr/bin/mosh-server", name: str = "mosh-server",
                 python: str = SERVER_PYTHON) -> None:
        self.parent_dir = parent_dir
        self.source = source
        self.name = name
        self.python = python
        self.mountpoint = ""
        self.proc: "subprocess.Popen[bytes] | None" = None
        self._log_path = ""
        self._buf = b""

    @property
    def path(self) -> str:
        return os.path.join(self.mountpoint, self.name)

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 15.0) -> "HangingFuse":
        if not os.path.exists(self.python):
            raise FuseError(f"{self.python} is missing; tests/bootstrap.sh installs python3-fusepy and fuse3")
        self.mountpoint = tempfile.mkdtemp(prefix="fuse-", dir=self.parent_dir)
        os.chmod(self.mountpoint, 0o755)
        self._log_path = self.mountpoint + ".log"
        with open(self._log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.python, "-I", os.path.abspath(__file__), "serve", self.mountpoint, self.source, self.name],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, close_fds=True)
        try:
            self._expect("ready", timeout)
            if not self.mounted():
                raise FuseError(f"server said ready but {self.mountpoint} is not a {FSTYPE} mount")
            st = os.stat(self.path)
            if st.st_size != os.path.getsize(self.source) or not st.st_mode & 0o111:
                raise FuseError(f"{self.path} is not an executable copy of {self.source}: {st}")
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def mounted(self) -> bool:
        """True while ``mountpoint`` is a mount of this server's file system type."""
        try:
            with open("/proc/self/mountinfo") as fh:
                for line in fh:
                    fields = line.split()
                    sep = fields.index("-")
                    if fields[4] == self.mountpoint and fields[sep + 1] == FSTYPE:
                        return True
        except OSError:
            pass
        return False

    def stop(self, timeout: float = 15.0, check: bool = True) -> None:
        """Release every blocked read, unmount, end the server, remove the mount point.

        Raises :class:`FuseError` (when ``check``) if the mount, the server or the directory is left."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._command("release", "released", timeout=5.0)
            except FuseError as exc:
                problems.append(str(exc))
        if self.mounted():
            if subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True, check=False).returncode != 0:
                # Busy: a process still runs the binary. Detach it; the server's exit aborts the connection.
                subprocess.run(["umount", "-l", self.mountpoint], capture_output=True, check=False)
        if self.proc is not None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()  # EOF: the server releases reads and unmounts itself
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"FUSE server {self.proc.pid} did not exit in {timeout:g}s; killed")
                self.proc.kill()
                self.proc.wait(10)
            if self.proc.stdout:
                self.proc.stdout.close()
        if self.mounted():
            subprocess.run(["umount", "-l", self.mountpoint], capture_output=True, check=False)
            if self.mounted():
                problems.append(f"{self.mountpoint} still mounted")
        if self.mountpoint:
            try:
                os.rmdir(self.mountpoint)
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"mount point {self.mountpoint} not removed: {exc}")
        log = self.log_text()
        if self._log_path:
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)
        if problems and check:
            raise FuseError("FUSE teardown: " + "; ".join(problems) + "\nserver log:\n" + log[-2000:])

    def __enter__(self) -> "HangingFuse":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(check=exc[0] is None)

    # ---------------------------------------------------------------- control
    def hang(self) -> None:
        """From now on every read request blocks until :meth:`release`."""
        self._command("hang", "hanging")

    def release(self) -> int:
        """Answer the blocked reads and serve normally again; returns how many were blocked."""
        return int(self._command("release", "released").split()[1])

    def status(self) -> dict:
        """``reads`` served or blocked so far, ``blocked`` now, ``ever_blocked``, ``state``, and
        ``pids``: the (thread) ids of the callers whose reads were blocked."""
        words = self._command("status", "status").split()[1:]
        out: dict = {}
        for w in words:
            k, _sep, v = w.partition("=")
            if k == "state":
                out[k] = v
            elif k == "pids":
                out[k] = [int(x) for x in v.split(",") if x]
            else:
                out[k] = int(v)
        return out

    def log_text(self) -> str:
        try:
            with open(self._log_path, errors="replace") as fh:
                return fh.read()
        except (OSError, TypeError):
            return ""

    def _command(self, cmd: str, reply: str, timeout: float = 10.0) -> str:
        if self.proc is None or self.proc.poll() is not None or self.proc.stdin is None:
            raise FuseError(f"FUSE server is not running (cannot {cmd}); log:\n{self.log_text()[-2000:]}")
        try:
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise FuseError(f"FUSE server: {cmd}: {exc}") from exc
        return self._expect(reply, timeout)

    def _expect(self, word: str, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise FuseError(f"FUSE server gave no {word!r} in {timeout:g}s; log:\n{self.log_text()[-2000:]}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise FuseError(f"FUSE server exited (rc={self.proc.wait()}) before {word!r}; "
                                f"log:\n{self.log_text()[-2000:]}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode(errors="replace")
        if text.split(" ", 1)[0] != word:
            raise FuseError(f"FUSE server answered {text!r}, expected {word!r}")
        return text

    def __repr__(self) -> str:
        return f"<HangingFuse {self.path} server={self.proc.pid if self.proc else None}>"


# --------------------------------------------------------------------------- server side
def _serve(mountpoint: str, source: str, name: str) -> int:
    import fusepy  # Debian's python3-fusepy

    with open(source, "rb") as fh:
        data = fh.read()
    out_lock = threading.Lock()
    cond = threading.Condition()
    state = {"hang": False, "generation": 0, "reads": 0, "blocked": 0, "ever_blocked": 0, "pids": []}
    now = time.time_ns()  # use_ns: st_*time in nanoseconds

    def say(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def release() -> int:
        with cond:
            n = state["blocked"]
            state["hang"] = False
            state["generation"] += 1
            cond.notify_all()
        return n

    class Ops(fusepy.Operations):
        use_ns = True

        def init(self, path):
            say("ready")

        def getattr(self, path, fh=None):
            base = {"st_uid": 0, "st_gid": 0, "st_atime": now, "st_mtime": now, "st_ctime": now}
            if path == "/":
                return dict(base, st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
            if path == "/" + name:
                return dict(base, st_mode=stat.S_IFREG | 0o755, st_nlink=1, st_size=len(data))
            raise fusepy.FuseOSError(errno.ENOENT)

        def readdir(self, path, fh):
            return [".", "..", name]

        def open(self, path, flags):
            if path != "/" + name:
                raise fusepy.FuseOSError(errno.ENOENT)
            return 0

        def read(self, path, size, offset, fh):
            with cond:
                state["reads"] += 1
                if state["hang"]:
                    gen = state["generation"]
                    state["blocked"] += 1
                    state["ever_blocked"] += 1
                    state["pids"].append(fusepy.fuse_get_context()[2])
                    while state["generation"] == gen:
                        cond.wait()
                    state["blocked"] -= 1
            return data[offset:offset + size]

        def statfs(self, path):
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 + len(data) // 4096, "f_namemax": 255}

    def control() -> None:
        for raw in sys.stdin:
            cmd = raw.strip()
            if cmd == "hang":
                with cond:
                    state["hang"] = True
                say("hanging")
            elif cmd == "release":
                say("released %d" % release())
            elif cmd == "status":
                with cond:
                    say("status reads=%d blocked=%d ever_blocked=%d state=%s pids=%s" % (
                        state["reads"], state["blocked"], state["ever_blocked"],
                        "hang" if state["hang"] else "serve", ",".join(str(p) for p in state["pids"])))
            else:
                say("error unknown command %r" % cmd)
        # EOF: the test is done (or gone). Release every read; libfuse's SIGTERM handler ends the
        # loop and unmounts (lazily, as root).
        release()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=control, name="control", daemon=True).start()
    fusepy.FUSE(Ops(), mountpoint, foreground=True, allow_other=True, default_permissions=True, ro=True,
                fsname="sgtest-hang", subtype="sgtest-hang")
    release()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "serve":
        sys.exit("usage: python3 -I fuse.py serve MOUNTPOINT SOURCE NAME")
    sys.exit(_serve(*sys.argv[2:]))

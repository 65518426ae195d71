# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Asking sshd what it would do, and changing its configuration safely: ``sshd -T``, ``sshd -t``, a drop-in, reload.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

sshd reads its configuration when it starts and on SIGHUP, so a drop-in does nothing until a reload, and a
reload of a configuration that does not validate would stop sshd. Every change here is validated with
``sshd -t`` first and undone when it does not validate.
"""

from __future__ import annotations

import os
import re
import signal
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import PROC, read_name, read_start_ticks
from ansible_collections.sessionguard.mosh.plugins.module_utils._text import cut, decode

DROPIN_NAME = 'sessionguard-lockout.conf'
DROPIN_HEADER = ('# Written by sessionguard.mosh.lockout: users locked out on this host. Lift a lockout with\n'
                 '# sessionguard.mosh.lockout state=absent; this file goes when the last one is lifted.\n')
# sshd splits a DenyUsers entry at "@" into USER@HOST and reads "*", "?" and "!" as pattern characters, so only
# plain names can be written there. Other names (Bob.Smith@corp.example) are denied through PAM only.
_EXPRESSIBLE = re.compile(r'[A-Za-z0-9_.$-]+')
# The connection sshd -T evaluates Match blocks for: the key files of a login from the host itself.
TEST_HOST = 'localhost'
TEST_ADDR = '127.0.0.1'
RELOAD_TIMEOUT = 10.0
ERROR_MAX = 2000


class SshdError(RuntimeError):
    pass


def expressible(name):
    """Whether ``name`` can be written in sshd's DenyUsers and mean exactly that user."""
    return bool(_EXPRESSIBLE.fullmatch(name))


def render_dropin(names):
    names = sorted(set(names))
    if not names:
        return None
    return DROPIN_HEADER + ''.join('DenyUsers %s\n' % n for n in names)


def parse_dropin(text):
    """The names in a drop-in written by :func:`render_dropin`."""
    names = []
    for line in (text or '').splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == 'DenyUsers':
            names.append(parts[1])
    return names


class Sshd(object):
    """The sshd whose main configuration file is ``config``; ``run(argv)`` returns ``(rc, stdout, stderr)``."""

    def __init__(self, run, binary, config='/etc/ssh/sshd_config', proc_root=PROC):
        self.run, self.binary, self.config, self.proc_root = run, binary, config, proc_root
        self.dropin_dir = os.path.join(os.path.dirname(config), 'sshd_config.d')
        self.dropin = os.path.join(self.dropin_dir, DROPIN_NAME)

    def _call(self, args):
        rc, out, err = self.run([self.binary] + args)
        return rc, out, err

    def check(self):
        """None when ``sshd -t`` accepts the configuration as it is on disk, else its error."""
        rc, out, err = self._call(['-t', '-f', self.config])
        if rc == 0:
            return None
        return cut(decode((err or out or 'sshd -t exited %d' % rc).strip()), ERROR_MAX)

    def effective(self, user=None):
        """sshd's settings (``sshd -T``), for a login of ``user`` when given: {keyword: [values]}. Raises SshdError."""
        args = ['-T', '-f', self.config]
        if user is not None:
            args += ['-C', 'user=%s,host=%s,addr=%s' % (user, TEST_HOST, TEST_ADDR)]
        rc, out, err = self._call(args)
        if rc != 0:
            raise SshdError(cut(decode((err or out or 'sshd -T exited %d' % rc).strip()), ERROR_MAX))
        settings = {}
        for line in out.splitlines():
            key, _sep, value = line.strip().partition(' ')
            if key:
                settings.setdefault(key.lower(), []).append(value.strip())
        return settings

    def read_dropin(self):
        try:
            with open(self.dropin) as f:
                return f.read()
        except (OSError, ValueError):
            return None

    def write_dropin(self, text):
        """Write (or, for None, remove) the drop-in; returns what was there before."""
        before = self.read_dropin()
        if text is None:
            if before is not None:
                os.unlink(self.dropin)
            return before
        if not os.path.isdir(self.dropin_dir):
            os.mkdir(self.dropin_dir, 0o755)
        tmp = self.dropin + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.dropin)
        return before

    def pid(self, pidfile):
        """PID of the listening sshd from its PidFile, or None when it does not run."""
        try:
            with open(pidfile) as f:
                pid = int(f.read(32).strip())
        except (OSError, ValueError):
            return None
        name = read_name(pid, self.proc_root)
        if name is None or not name.startswith('sshd'):
            return None
        return pid

    def reload(self, pidfile):
        """SIGHUP the sshd of ``pidfile`` and wait until it has started again: (True, detail) or (False, why).

        On SIGHUP sshd removes its PidFile, re-executes itself and writes the PidFile again once it listens. It
        ignores SIGHUP meanwhile, so a second reload sent then would be lost: this waits for the new PidFile.
        """
        pid = self.pid(pidfile)
        if pid is None:
            return False, 'sshd is not running (no live sshd in %s); the change applies when it starts' % pidfile
        before = os.stat(pidfile).st_mtime_ns
        start = read_start_ticks(pid, self.proc_root)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            if read_start_ticks(pid, self.proc_root) != start:
                return False, 'sshd (pid %d) exited on reload' % pid
            try:
                if os.stat(pidfile).st_mtime_ns != before:
                    return True, 'sshd (pid %d) reloaded' % pid
            except OSError:
                pass
            time.sleep(0.02)
        return False, 'sshd (pid %d) did not confirm the reload within %d s' % (pid, RELOAD_TIMEOUT)

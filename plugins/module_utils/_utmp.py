# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reading utmp/wtmp records that mosh-server writes through libutempter.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

mosh-server writes ``IP via mosh [PID]`` while a client is attached and ``mosh [PID]`` after 30 s of
client silence. The host string is chosen by the process that writes it, so it is a hint only.
"""

from __future__ import annotations

import os
import re
import struct

from ansible_collections.sessionguard.mosh.plugins.module_utils._text import decode

UTMP_PATHS = ('/run/utmp', '/var/run/utmp')
WTMP_PATHS = ('/var/log/wtmp',)
USER_PROCESS = 7
DEAD_PROCESS = 8
# glibc struct utmp on 64-bit Linux: type, pid, line[32], id[4], user[32], host[256],
# exit{short,short}, session, tv{int32,int32}, addr_v6[4], unused[20].
_FORMAT = '<hhi32s4s32s256shhiii4i20s'
RECORD_SIZE = struct.calcsize(_FORMAT)
# mosh writes this many seconds after the last client packet when it reverts to "mosh [PID]".
MOSH_IDLE_REVERT = 30
_MOSH_HOST = re.compile(r'^(?:(?P<ip>\S+) via )?mosh \[(?P<pid>\d+)\]$')
_WTMP_TAIL = 4 << 20


class Record(object):
    __slots__ = ('type', 'pid', 'line', 'user', 'host', 'time')

    def __init__(self, type, pid, line, user, host, time):
        self.type, self.pid, self.line, self.user, self.host, self.time = type, pid, line, user, host, time

    def mosh(self):
        """(client ip or None, mosh-server pid) when this is a mosh record, else None.

        The host text is whatever its writer chose, so it is believed only when the PID it names is the record's
        own ``ut_pid``, which the setgid utempter helper sets to its caller: a user can write a record for their
        own server, never one that names somebody else's.
        """
        m = _MOSH_HOST.match(self.host)
        if not m or int(m.group('pid')) != self.pid:
            return None
        return m.group('ip'), self.pid


def _cstr(raw):
    return decode(raw.split(b'\0', 1)[0])


def parse(data):
    out = []
    usable = len(data) - len(data) % RECORD_SIZE
    for off in range(0, usable, RECORD_SIZE):
        f = struct.unpack_from(_FORMAT, data, off)
        out.append(Record(f[0], f[2], _cstr(f[3]), _cstr(f[5]), _cstr(f[6]), f[10] + f[11] / 1e6))
    return out


def _first_existing(paths):
    for p in paths:
        if os.path.exists(p):
            return p
    return None


def read_file(path, tail=None):
    with open(path, 'rb') as f:
        if tail:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - tail)
            f.seek(start - start % RECORD_SIZE)
        return parse(f.read())


def _same_user(rec, user):
    return user is None or rec.user == user.encode('utf-8', 'replace')[:32].decode('utf-8', 'ignore')


class MoshUtmp(object):
    """What utmp and wtmp say about mosh-server PIDs; empty where the files do not exist."""

    def __init__(self, utmp_path=None, wtmp_path=None):
        self.utmp_path = utmp_path or _first_existing(UTMP_PATHS)
        self.wtmp_path = wtmp_path or _first_existing(WTMP_PATHS)
        self.live = {}      # pid -> newest USER_PROCESS mosh record in utmp
        self.history = {}   # pid -> list of mosh records from wtmp, oldest first
        self.errors = []
        if self.utmp_path:
            for rec in self._load(self.utmp_path):
                m = rec.mosh() if rec.type == USER_PROCESS else None
                if m:
                    self.live[m[1]] = rec
        if self.wtmp_path:
            for rec in self._load(self.wtmp_path, _WTMP_TAIL):
                m = rec.mosh()
                if m:
                    self.history.setdefault(m[1], []).append(rec)

    def _load(self, path, tail=None):
        try:
            return read_file(path, tail)
        except OSError as e:
            self.errors.append('%s: %s' % (path, e))
            return []

    def last_client(self, pid, user=None):
        """(ip, source) of the newest client address recorded for this server, or (None, None).

        ``user``: the server's user; a record of another user (left behind by a process whose PID the server now
        has) is not the server's. utmp holds 32 bytes of a name, so long names are compared by that prefix.
        """
        rec = self.live.get(pid)
        if rec is not None and rec.mosh()[0] and _same_user(rec, user):
            return rec.mosh()[0], 'utmp'
        for rec in reversed(self.history.get(pid, [])):
            if rec.mosh()[0] and _same_user(rec, user):
                return rec.mosh()[0], 'wtmp'
        return None, None

    def attachment(self, pid, now):
        """('attached'|'detached'|None, seconds since last client contact or None).

        A live ``IP via mosh`` record means a client spoke within the last 30 s. A ``mosh [PID]``
        record written after a ``via`` one means the client went quiet 30 s before that record.
        """
        rec = self.live.get(pid)
        hist = self.history.get(pid, [])
        if rec is None and hist:
            rec = hist[-1] if hist[-1].type == USER_PROCESS else None
        if rec is None:
            return None, None
        ip = rec.mosh()[0]
        if ip:
            return 'attached', None
        had_client = any(h.mosh()[0] for h in hist) or bool(self.last_client(pid)[0])
        if not had_client:
            return None, None
        return 'detached', max(0, int(now - rec.time) + MOSH_IDLE_REVERT)

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
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._text import decode

UTMP_PATHS = ('/run/utmp', '/var/run/utmp')
WTMP_PATHS = ('/var/log/wtmp',)
BOOT_TIME = 2
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
# The login history reads at most this much of the end of wtmp (about 43000 records), and lists at most
# HISTORY_MAX logins, the newest; the counts still cover all.
HISTORY_TAIL = 16 << 20
HISTORY_MAX = 500
# mosh-server rewrites its record (remove, then add) each time a client attaches or goes quiet: an add this
# soon after the same server's remove on the same terminal continues the session.
_REWRITE_GAP = 2
# What sshd writes as ut_host: the client's address (or its name with UseDNS). Anything else (tmux, screen,
# a console login) is not an SSH login.
_SSH_HOST = re.compile(r'^[0-9A-Za-z_.:%-]+$')


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


    def kind(self):
        """'mosh' or 'ssh' for a login record this history reports, else None."""
        if self.type != USER_PROCESS or not self.user:
            return None
        if self.mosh() is not None:
            return 'mosh'
        if _SSH_HOST.match(self.host) and not _MOSH_HOST.match(self.host):
            return 'ssh'
        return None


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
    """``rec`` (a Record or a history entry) is of ``user``, compared by the 32 bytes of a name utmp keeps."""
    rec_user = rec['user'] if isinstance(rec, dict) else rec.user
    return user is None or rec_user == user.encode('utf-8', 'replace')[:32].decode('utf-8', 'ignore')


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


def _iso(t):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))


def logins(records, since, now):
    """mosh and SSH logins from wtmp ``records`` (oldest first) that overlap [since, now], newest first.

    Records are paired as last(1) pairs them: a login on a terminal line ends at the next logout (DEAD_PROCESS)
    on that line, or at a reboot. The successive records of one mosh-server (its remove-then-add each time a
    client attaches or goes quiet) make one login, whose client addresses are all kept, first seen first.
    Each entry: kind, user, client_ip, client_ips, tty, pid, start, end (null while no logout is recorded),
    duration_seconds (up to now while open), ended_by (logout, reboot, unknown when a later login on the same line
    shows the logout was never written, or null while open).
    """
    open_, closed, out = {}, {}, []

    def close(entry, t, how):
        entry['_end'], entry['ended_by'] = t, how
        out.append(entry)

    for rec in records:
        if rec.type == BOOT_TIME:
            for entry in open_.values():
                close(entry, rec.time, 'reboot')
            open_.clear()
            closed.clear()
        elif rec.type == DEAD_PROCESS:
            entry = open_.pop(rec.line, None)
            if entry is not None:
                close(entry, rec.time, 'logout')
                closed[rec.line] = entry
        else:
            kind = rec.kind()
            if kind is None:
                continue
            ip = rec.mosh()[0] if kind == 'mosh' else rec.host
            entry = open_.get(rec.line)
            if entry is None and kind == 'mosh':
                last = closed.get(rec.line)
                if (last is not None and last['kind'] == 'mosh' and last['pid'] == rec.pid
                        and rec.time - last['_end'] <= _REWRITE_GAP):
                    out.remove(last)
                    entry = open_[rec.line] = last
                    entry['_end'] = entry['ended_by'] = None
            elif entry is not None and not (kind == 'mosh' and entry['kind'] == 'mosh' and entry['pid'] == rec.pid):
                # A new login on a line whose last one was never logged out (a crash): that one's end is unknown.
                close(open_.pop(rec.line), None, 'unknown')
                entry = None
            if entry is None:
                entry = open_[rec.line] = {'kind': kind, 'user': rec.user, 'client_ips': [], 'tty': rec.line,
                                           'pid': rec.pid, '_start': rec.time, '_end': None, 'ended_by': None}
            if ip and ip not in entry['client_ips']:
                entry['client_ips'].append(ip)
    out.extend(open_.values())
    result = []
    for entry in out:
        end = entry.pop('_end')
        start = entry.pop('_start')
        if (end is not None and end < since) or start > now or (end is None and entry['ended_by'] and start < since):
            continue
        if entry['ended_by'] is None:
            duration = now - start
        else:
            duration = end - start if end is not None else None
        entry['client_ip'] = entry['client_ips'][0] if entry['client_ips'] else None
        entry['start'] = _iso(start)
        entry['end'] = _iso(end) if end is not None else None
        entry['duration_seconds'] = max(0, int(duration)) if duration is not None else None
        entry['_t'] = start
        result.append(entry)
    result.sort(key=lambda e: e['_t'], reverse=True)
    for entry in result:
        del entry['_t']
    return result


def history(days, now=None, wtmp_path=None, users=None):
    """The login history of the last ``days`` days from this host's wtmp, bounded; only of ``users`` (names) if given.

    wtmp is rotated (logrotate keeps last month's in wtmp.1 on Debian) and only its last HISTORY_TAIL bytes are
    read, so ``covers_from`` says how far back the records read go: nothing older can be known from here.
    """
    now = time.time() if now is None else now
    since = now - days * 86400
    path = wtmp_path or _first_existing(WTMP_PATHS)
    info = {'wtmp': path, 'since': _iso(since), 'covers_from': None, 'logins': [], 'logins_total': 0,
            'logins_truncated': False, 'error': None}
    if path is None:
        info['error'] = 'no wtmp file (%s)' % ', '.join(WTMP_PATHS)
        return info
    try:
        records = read_file(path, HISTORY_TAIL)
    except OSError as e:
        info['error'] = '%s: %s' % (path, e)
        return info
    stamped = [r.time for r in records if r.time > 0]
    info['covers_from'] = _iso(min(stamped)) if stamped else None
    found = logins(records, since, now)
    if users is not None:
        found = [e for e in found if any(_same_user(e, u) for u in users)]
    info['logins_total'] = len(found)
    info['logins_truncated'] = len(found) > HISTORY_MAX
    info['logins'] = found[:HISTORY_MAX]
    return info

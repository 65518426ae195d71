# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A revoked user names their processes, arguments, binaries and cgroups. What they write must come out
of the reader as valid, visible text: invalid UTF-8 and every control or bidi character escaped, never
raw, never an exception, and always serialisable as JSON for Ansible."""

from __future__ import annotations

import datetime
import json
import re

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import CLK_TCK, read_environ_var
from ansible_collections.sessionguard.mosh.plugins.module_utils._report import Clock, proc_entry, session_entry
from ansible_collections.sessionguard.mosh.plugins.module_utils._revoke import Plan
from ansible_collections.sessionguard.mosh.plugins.module_utils._text import decode, escape
from ansible_collections.sessionguard.mosh.tests.unit.plugins.module_utils.fakeproc import BTIME, base_host

USER = 1000
# Anything a terminal, a YAML callback or a browser would act on: C0, DEL, C1, bidi and format characters.
RAW = re.compile('[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]')


@pytest.mark.parametrize('raw, text', [
    (b'bash', 'bash'),
    (b'caf\xc3\xa9 \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac', 'caf\u00e9 \u2713 \u65e5\u672c'),
    (b'\xe9vil', '\\xe9vil'),
    (b'\xff\xfe', '\\xff\\xfe'),
    (b'ba\xe2\x80\xaesh', 'ba\\u202esh'),
    (b'\x1b[31mred\x1b[0m', '\\x1b[31mred\\x1b[0m'),
    (b'\xc2\x9b2J', '\\x9b2J'),
    (b'\x9b2J', '\\x9b2J'),
    (b'a\tb\nc\rd\x00e\x7f', 'a\\x09b\\x0ac\\x0dd\\x00e\\x7f'),
    (b'\xe2\x80\x8bzw\xe2\x81\xa6iso\xef\xbb\xbfbom\xd8\x9calm', '\\u200bzw\\u2066iso\\ufeffbom\\u061calm'),
    ('caf\udce9', 'caf\\xe9'),
])
def test_decode_escapes_invalid_utf8_and_controls(raw, text):
    assert decode(raw) == text


def test_escape_leaves_printable_text_alone_and_marks_every_control():
    assert escape('plain text: \u00e9\u2713/\u65e5') == 'plain text: \u00e9\u2713/\u65e5'
    assert escape('\x1b\x9b\u202e\u2028') == '\\x1b\\x9b\\u202e\\u2028'


def test_every_byte_decodes_to_safe_json():
    for b in range(256):
        for raw in (bytes([b]), b'x' + bytes([b]) + b'y', bytes([0xc2, b])):
            text = decode(raw)
            assert not RAW.search(text), (raw, text)
            assert json.loads(json.dumps(text)) == text
            text.encode('utf-8')


HOSTILE_COMM = b'\xe9\x1b[31m\xe2\x80\xae\x9b'
HOSTILE_ARGV = [b'ba\xe2\x80\xaesh', b'\x1b]0;pwned\x07', b'\xe9t\xe9', b'\xc2\x9b2J', b'line\nbreak']


def hostile_host(fp):
    base_host(fp)
    server, shell = fp.mosh_login(USER, session=7, pty=4, tag='tied')
    server.start = 4200
    evil_exe = fp.binary('\udce9vil\u202e', b'#!/bin/false\n')     # the byte 0xe9, then U+202E
    evil = fp.spawn(shell, HOSTILE_COMM, argv=HOSTILE_ARGV, exe=evil_exe.encode('utf-8', 'surrogateescape'),
                    environ={b'EVIL': b'\x1b[2J\xe9'}, tag='tied')
    return server, evil


def assert_safe(text):
    assert isinstance(text, str)
    assert not RAW.search(text), text
    json.dumps(text)


def test_reader_escapes_what_the_user_wrote(fakeproc):
    _server, evil = hostile_host(fakeproc)
    fakeproc.build()
    p = fakeproc.snapshot().get(evil.pid)
    assert p.name == '\\xe9\\x1b[31m\\u202e\\x9b'
    assert p.cmdline == ['ba\\u202esh', '\\x1b]0;pwned\\x07', '\\xe9t\\xe9', '\\x9b2J', 'line\\x0abreak']
    assert p.exe.endswith('/\\xe9vil\\u202e')
    assert read_environ_var(evil.pid, 'EVIL', fakeproc.root) == '\\x1b[2J\\xe9'
    for text in [p.name, p.command, p.exe] + p.cmdline:
        assert_safe(text)


def test_a_comm_that_mimics_the_stat_line_is_read_as_a_name(fakeproc):
    base_host(fakeproc)
    _server, shell = fakeproc.mosh_login(USER, session=7, pty=4)
    fake = fakeproc.spawn(shell, b') Z 1 1 1 0 -1', state='S')
    fakeproc.build()
    p = fakeproc.snapshot().get(fake.pid)
    assert (p.name, p.state, p.ppid, p.zombie) == (') Z 1 1 1 0 -1', 'S', shell.pid, False)


def test_cgroup_text_is_split_into_lines_before_it_is_escaped(fakeproc):
    # cgroup v1 and v2 side by side, as on a hybrid host; the session is in the named systemd hierarchy.
    p = fakeproc.add(uid=USER, cgroup='12:pids:/user.slice/user-1000.slice/user@1000.service\n'
                                      '1:name=systemd:/user.slice/user-1000.slice/session-7.scope\n0::/\n')
    q = fakeproc.add(uid=USER, cgroup=b'0::/user.slice/user-1000.slice/user@1000.service/app.slice/\xe9\x1b.scope\n')
    fakeproc.build()
    snap = fakeproc.snapshot()
    assert (snap.get(p.pid).cgroup, snap.get(p.pid).logind_session) == ('/user.slice/user-1000.slice/session-7.scope', '7')
    assert snap.get(q.pid).cgroup == '/user.slice/user-1000.slice/user@1000.service/app.slice/\\xe9\\x1b.scope'


def test_a_session_scope_named_by_the_user_is_no_logind_session(fakeproc):
    """Below user@UID.service the user names the cgroups: a "session-3.scope" there is not logind's, and
    must not tie another login's processes (here an admin's root shell) to the user's mosh session."""
    base_host(fakeproc)
    server, shell = fakeproc.mosh_login(USER, session=None, pty=4, tag='tied')
    for p in (server, shell):
        p.cgroup = '0::/user.slice/user-1000.slice/user@1000.service/user.slice/user-0.slice/session-3.scope\n'
    admin = fakeproc.add(uid=0, comm='bash', argv=['-bash'], tty=1, loginuid=0, sessionid=3,
                         cgroup='0::/user.slice/user-0.slice/session-3.scope\n', tag='admin')
    fakeproc.build()
    snap = fakeproc.snapshot()
    plan = Plan(snap, [USER], 'mosh', True, (), fakeproc.judge())
    assert set(p.pid for p in plan.procs) == fakeproc.pids('tied')
    assert snap.get(server.pid).logind_session is None and snap.get(admin.pid).logind_session == '3'


def test_report_entries_are_escaped_and_json(fakeproc):
    server, evil = hostile_host(fakeproc)
    fakeproc.build()
    snap = fakeproc.snapshot()
    entry = proc_entry(snap.get(evil.pid), signal='SIGKILL')
    assert entry['cmdline'] == 'ba\\u202esh \\x1b]0;pwned\\x07 \\xe9t\\xe9 \\x9b2J line\\x0abreak'
    plan = Plan(snap, [USER], 'mosh', False, (), fakeproc.judge())
    (s,) = plan.sessions
    report = session_entry(s, plan.kill_of(s), Clock(fakeproc.root))
    assert report['leader_pid'] == server.pid and report['process_count'] == 3
    started = datetime.datetime.fromtimestamp(BTIME + 4200 // CLK_TCK, datetime.timezone.utc)
    assert report['started'] == started.strftime('%Y-%m-%dT%H:%M:%SZ')
    out = json.dumps(report, ensure_ascii=False)
    assert not RAW.search(out)
    assert '\\\\xe9' in out and '\\\\u202e' in out and '\\\\x1b' in out

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The lockout's file handling on a temporary root: PAM line, deny list, key paths, quarantine round trip.

What sshd and PAM make of these files is shown on live logins in tests/live/test_lockout.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils import _lockout as lk
from ansible_collections.sessionguard.mosh.plugins.module_utils._sshd import expressible, parse_dropin, render_dropin
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import Target, UserError, protected

DEBIAN_PAM = """# PAM configuration for the Secure Shell service
@include common-auth
account    required     pam_nologin.so
@include common-account
session    required     pam_loginuid.so
"""
RHEL_PAM = """#%PAM-1.0
auth       substack     password-auth
account    required     pam_sepermit.so
account    required     pam_nologin.so
account    include      password-auth
session    required     pam_loginuid.so
"""


@pytest.fixture
def root(tmp_path):
    for d in ('etc/pam.d', 'var/lib', 'var/spool/cron/crontabs', 'var/spool/cron/atjobs', 'var/lib/systemd/linger',
              'run/sudo/ts', 'home/bob/.ssh'):
        (tmp_path / d).mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize('text', [DEBIAN_PAM, RHEL_PAM])
def test_pam_line_goes_first_in_the_account_stack_and_comes_out_byte_identical(text):
    after = lk.pam_with_line(text)
    lines = after.split('\n')
    first_account = next(i for i, line in enumerate(lines) if line.split()[:1] == ['account']
                         or line.startswith('@include common-account'))
    assert lines[first_account] == lk.PAM_LINE
    assert lines[first_account - 1] == lk.PAM_MARK
    assert lk.pam_with_line(after) == after
    assert lk.pam_without_line(after) == text


def test_pam_line_is_appended_when_there_is_no_account_stack():
    text = 'auth required pam_unix.so\n'
    assert lk.pam_with_line(text) == 'auth required pam_unix.so\n%s\n%s\n' % (lk.PAM_MARK, lk.PAM_LINE)
    assert lk.pam_without_line(lk.pam_with_line(text)) == text


def test_deny_list_is_root_only_and_goes_when_empty(root):
    layout = lk.Layout(str(root))
    lk.ensure_state_dir(layout)
    assert stat.S_IMODE(os.stat(layout.state_dir).st_mode) == 0o700
    lk.write_deny(layout, ['bob', 'Bob.Smith@corp.example'])
    assert lk.read_deny(layout) == ['bob', 'Bob.Smith@corp.example']
    st = os.stat(layout.deny)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    lk.write_deny(layout, [])
    assert not os.path.exists(layout.deny)


@pytest.mark.parametrize('name, ok', [('bob', True), ('svc-1.x', True), ('host$', True), ('Bob.Smith@corp.example', False),
                                      ('CORP\\bob', False), ('b*', False), ('!bob', False), ('a,b', False)])
def test_deny_users_takes_only_names_it_cannot_misread(name, ok):
    assert expressible(name) is ok


def test_dropin_round_trip():
    text = render_dropin(['bob', 'alice', 'bob'])
    assert parse_dropin(text) == ['alice', 'bob']
    assert render_dropin([]) is None


@pytest.mark.parametrize('pattern, path, shared', [
    ('.ssh/authorized_keys', '/home/bob/.ssh/authorized_keys', False),
    ('/etc/ssh/keys/%u', '/etc/ssh/keys/bob', False),
    ('/etc/ssh/keys/%U.pub', '/etc/ssh/keys/1001.pub', False),
    ('%h/.ssh/k', '/home/bob/.ssh/k', False),
    ('/etc/ssh/all_keys', '/etc/ssh/all_keys', True),
    ('/etc/ssh/100%%/%u', '/etc/ssh/100%/bob', False),
])
def test_key_paths_expand_as_sshd_does(pattern, path, shared):
    assert lk.expand_key_path(pattern, 'bob', 1001, '/home/bob') == (path, shared)


def test_unknown_key_path_token_is_refused():
    assert lk.expand_key_path('/k/%i', 'bob', 1, '/home/bob') == (None, 'unsupported token %i')


@pytest.mark.parametrize('name', ['bob', 'Bob.Smith@corp.example', 'CORP\\bob', '..', '\u00e9t\u00e9', 'a/b'])
def test_record_file_names_are_never_paths(name):
    key = lk.record_key(name)
    assert '/' not in key and key not in ('.', '..') and key.startswith('u-')


def test_record_file_names_do_not_collide():
    assert len(set(lk.record_key(n) for n in ('a.b', 'a%2eb', 'a%b', 'A.b'))) == 4


def test_quarantine_round_trip_keeps_bytes_owner_mode_xattrs_and_times(root):
    layout = lk.Layout(str(root))
    lk.ensure_state_dir(layout)
    keys = root / 'home/bob/.ssh/authorized_keys'
    data = b'ssh-ed25519 AAAA bob\n\xff not utf-8\n'
    keys.write_bytes(data)
    os.chown(str(keys), 4321, 4322)
    os.chmod(str(keys), 0o640)
    try:
        os.setxattr(str(keys), 'user.sg', b'\x00label')
        xattr = True
    except OSError:  # a file system without user xattrs: the rest still counts
        xattr = False
    os.utime(str(keys), ns=(1000000000, 2000000000))
    before = os.lstat(str(keys))

    record = lk.Record(layout, 'bob')
    record.start(4321, 'test')
    body, link, meta = lk.read_file(str(keys))
    entry = record.quarantine('key', str(keys), body, link, meta)
    assert not keys.exists()
    assert entry['path'] == '/home/bob/.ssh/authorized_keys'
    assert entry['sha256'] == hashlib.sha256(data).hexdigest()
    saved = json.loads(open(record.path).read())
    assert saved['files'][0]['uid'] == 4321 and saved['files'][0]['mode'] == 0o640
    kept = os.path.join(record.qdir, entry['quarantine'])
    assert os.stat(kept).st_uid == 0 and stat.S_IMODE(os.stat(kept).st_mode) == 0o600

    lk.restore_file(str(keys), record.kept(entry), entry['link'], entry)
    after = os.lstat(str(keys))
    assert keys.read_bytes() == data
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (4321, 4322, 0o640)
    assert after.st_mtime_ns == before.st_mtime_ns
    if xattr:
        assert os.getxattr(str(keys), 'user.sg') == b'\x00label'
    assert lk.same_file(str(keys), data, None, entry)
    record.drop()
    assert not os.path.exists(record.qdir) and not os.path.exists(record.path)


def test_a_changed_quarantine_copy_is_caught(root):
    layout = lk.Layout(str(root))
    lk.ensure_state_dir(layout)
    keys = root / 'home/bob/.ssh/authorized_keys'
    keys.write_bytes(b'k\n')
    record = lk.Record(layout, 'bob')
    record.start(1, None)
    entry = record.quarantine('key', str(keys), *lk.read_file(str(keys)))
    with open(os.path.join(record.qdir, entry['quarantine']), 'ab') as f:
        f.write(b'evil\n')
    with pytest.raises(lk.LockoutError, match='quarantined copy .* changed'):
        record.kept(entry)


def test_a_symlink_is_moved_as_a_symlink(root):
    layout = lk.Layout(str(root))
    lk.ensure_state_dir(layout)
    link = root / 'home/bob/.ssh/authorized_keys'
    os.symlink('/etc/ssh/shared_keys', str(link))
    record = lk.Record(layout, 'bob')
    record.start(1, None)
    entry = record.quarantine('key', str(link), *lk.read_file(str(link)))
    assert entry['link'] == '/etc/ssh/shared_keys' and not os.path.lexists(str(link))
    lk.restore_file(str(link), record.kept(entry), entry['link'], entry)
    assert os.readlink(str(link)) == '/etc/ssh/shared_keys'


def test_a_fifo_is_not_read(root):
    fifo = root / 'home/bob/.ssh/authorized_keys'
    os.mkfifo(str(fifo))
    with pytest.raises(lk.LockoutError, match='not a regular file'):
        lk.read_file(str(fifo))


def test_shadow_expiry(root):
    (root / 'etc/shadow').write_text('root:*:19000:0:99999:7:::\nbob:!:19000:0:99999:7:::\n'
                                     'carol:!:19000:0:99999:7::20000:\n')
    layout = lk.Layout(str(root))
    assert lk.shadow_expiry(layout, 'bob') == ''
    assert lk.shadow_expiry(layout, 'carol') == '20000'
    assert lk.shadow_expiry(layout, 'dave') is None
    assert lk.is_expired('1', 20000) and not lk.is_expired('', 20000) and not lk.is_expired('20001', 20000)
    assert lk.days_text('') == 'never' and lk.days_text('1') == '1970-01-02'


def test_persistence_items_are_the_users_own(root):
    layout = lk.Layout(str(root))
    (root / 'var/spool/cron/crontabs/bob').write_text('* * * * * true\n')
    mine = root / 'var/spool/cron/atjobs/a0000101c2d3e4'
    mine.write_text('#!/bin/sh\n')
    os.chown(str(mine), 1001, 1)
    other = root / 'var/spool/cron/atjobs/a0000201c2d3e4'
    other.write_text('#!/bin/sh\n')
    os.chown(str(other), 1002, 1)
    (root / 'var/spool/cron/atjobs/.SEQ').write_text('2\n')
    (root / 'var/lib/systemd/linger/bob').write_text('')
    found = lk.persistence_items(layout, 'bob', 1001)
    assert found == [('crontab', str(root / 'var/spool/cron/crontabs/bob')), ('at', str(mine)),
                     ('linger', str(root / 'var/lib/systemd/linger/bob'))]


def test_protected_users_are_refused_by_name_or_uid():
    bob = Target('bob', 1001, 'bob')
    with pytest.raises(UserError, match="'bob' is protected \\(named in protected_users\\)"):
        protected([bob], ['bob'])
    with pytest.raises(UserError, match="'bob' is protected \\(the connection\\)"):
        protected([bob], [], [(1001, 'the connection')])
    with pytest.raises(UserError, match="'ghost' is protected"):
        protected(['ghost'], ['ghost'])
    with pytest.raises(UserError, match="protected_users: 'a b' is not a valid user"):
        protected([bob], ['a b'])
    protected([bob], ['alice', 1002])

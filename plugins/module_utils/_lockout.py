# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Closing the door on a host, and opening it again exactly as it was.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

The barrier that holds for every identity source (``/etc/passwd``, LDAP, SSSD) and every authentication
method is a host-local deny list:

* a ``pam_listfile`` deny entry in sshd's PAM account stack. PAM files are read at each login and sshd runs
  the account stack after every successful authentication when ``UsePAM yes`` (keys, certificates,
  ``AuthorizedKeysCommand`` keys, passwords, keyboard-interactive), so it applies at once and takes any name,
  ``Bob.Smith@corp.example`` included;
* ``DenyUsers`` in an ``sshd_config.d`` drop-in, for every name sshd can express there, which sshd checks for
  every method too, even with ``UsePAM no``; it needs a reload, validated with ``sshd -t`` first.

Local accounts (in ``/etc/shadow``) are also expired - ``passwd -l`` would not stop a key login - and every
key file sshd would read for the user is moved to a root-only quarantine. Everything changed is recorded
under ``/var/lib/sessionguard`` so that lifting the lockout puts back exactly what was there.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pwd
import signal
import stat
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._sshd import Sshd, SshdError, expressible, parse_dropin, render_dropin
from ansible_collections.sessionguard.mosh.plugins.module_utils._text import decode
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import UserError, protected, task_owners

STATE_DIR = '/var/lib/sessionguard'
DENY_FILE = STATE_DIR + '/deny'
PAM_SSHD = '/etc/pam.d/sshd'
PAM_MARK = '# sessionguard.mosh.lockout: deny the users in %s (this goes when the last lockout is lifted)' % DENY_FILE
# requisite: a denied user's login ends here, before any later "sufficient" module could accept it. onerr=succeed:
# a deny file that cannot be read must not lock every administrator out; DenyUsers, expiry and the quarantined
# keys still hold then.
PAM_LINE = 'account requisite pam_listfile.so item=user sense=deny file=%s onerr=succeed' % DENY_FILE
# Shadow's "account expires" in days since 1970. 1 (1970-01-02), not 0: 0 means "no expiry" to some tools.
EXPIRED = '1'
NEVER = ''
PERSISTENCE = ('report', 'disable')
# Where sshd is looked for besides PATH (a become shell's PATH often lacks the sbin directories).
SSHD_DIRS = ['/usr/sbin', '/usr/local/sbin']
# Larger files are not copied into the quarantine (a hostile user chooses the size); the deny list still holds.
FILE_MAX = 16 << 20
LIST_MAX = 20
RECORD_VERSION = 1


class LockoutError(RuntimeError):
    pass


class Layout(object):
    """Where things are on the host; ``root`` is a directory standing for ``/`` (tests use a temporary one)."""

    def __init__(self, root='/'):
        self.root = root
        self.state_dir = self.at(STATE_DIR)
        self.deny = self.at(DENY_FILE)
        self.lock = self.at(STATE_DIR + '/lock')
        self.records = self.at(STATE_DIR + '/lockouts')
        self.quarantine = self.at(STATE_DIR + '/quarantine')
        self.pam_sshd = self.at(PAM_SSHD)
        self.shadow = self.at('/etc/shadow')
        # Debian's spool first, then RHEL's.
        self.crontab_dirs = [self.at('/var/spool/cron/crontabs'), self.at('/var/spool/cron')]
        self.at_dirs = [self.at('/var/spool/cron/atjobs'), self.at('/var/spool/at')]
        self.linger = self.at('/var/lib/systemd/linger')
        self.sudo_ts = [self.at('/run/sudo/ts'), self.at('/var/run/sudo/ts'), self.at('/var/lib/sudo/ts')]
        self.atd_pid = self.at('/run/atd.pid')

    def at(self, path):
        """The host's absolute ``path`` under the root."""
        return os.path.join(self.root, path.lstrip('/'))

    def host_path(self, path):
        """The inverse of :meth:`at`: how the host names ``path``."""
        if self.root in ('', '/'):
            return path
        return '/' + os.path.relpath(path, self.root)


def record_key(name):
    """A file name for ``name``: any name a directory hands out, never ``.`` or ``..`` and never a path."""
    out = []
    for b in bytearray(name.encode('utf-8', 'surrogateescape')):
        c = chr(b)
        out.append(c if (b < 128 and c.isalnum()) or c in '._-@' else '%%%02x' % b)
    return 'u-' + ''.join(out)


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def days_text(value):
    """Shadow's expiry field as people read it: ``never`` or a date."""
    if value in (None, NEVER):
        return 'never'
    try:
        return time.strftime('%Y-%m-%d', time.gmtime(int(value) * 86400))
    except (ValueError, OverflowError):
        return value


@contextlib.contextmanager
def host_lock(layout):
    """The one lock for every change under the state dir, the deny list, the PAM line and the drop-in: concurrent
    runs on a host (forks of one playbook, or two playbooks) take turns, so no entry is lost or written twice."""
    ensure_state_dir(layout)
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_state_dir(layout):
    for d in (layout.state_dir, layout.records, layout.quarantine):
        if not os.path.isdir(d):
            os.makedirs(d, 0o700)
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise LockoutError('%s is not a directory owned by root; refusing to keep lockout state there' % d)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(d, 0o700)


def _write_atomic(path, data, mode=0o600):
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _read_text(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'surrogateescape')
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


# --------------------------------------------------------------------------------------------- deny list + PAM

def read_deny(layout):
    text = _read_text(layout.deny) or ''
    return [line for line in text.split('\n') if line]


def write_deny(layout, names):
    if names:
        _write_atomic(layout.deny, ''.join(n + '\n' for n in names).encode('utf-8', 'surrogateescape'))
    elif os.path.lexists(layout.deny):
        os.unlink(layout.deny)


def pam_with_line(text):
    """sshd's PAM file with the deny entry first in its account stack (before anything that could accept)."""
    lines = text.split('\n')
    if PAM_LINE in (line.strip() for line in lines):
        return text
    at = len(lines) - (1 if lines and lines[-1] == '' else 0)
    for i, line in enumerate(lines):
        words = line.split()
        if words and (words[0].lstrip('-') == 'account' or words[:2] == ['@include', 'common-account']):
            at = i
            break
    return '\n'.join(lines[:at] + [PAM_MARK, PAM_LINE] + lines[at:])


def pam_without_line(text):
    lines = [line for line in text.split('\n') if line.strip() not in (PAM_LINE, PAM_MARK)]
    return '\n'.join(lines)


def write_pam(layout, text):
    st = os.stat(layout.pam_sshd)
    _write_atomic(layout.pam_sshd, text.encode('utf-8', 'surrogateescape'), stat.S_IMODE(st.st_mode))
    os.chown(layout.pam_sshd, st.st_uid, st.st_gid)


# --------------------------------------------------------------------------------------------- expiry

def shadow_expiry(layout, name):
    """Field 8 of ``name``'s line in /etc/shadow (``''`` = never), or None when the account is not local."""
    text = _read_text(layout.shadow) or ''
    for line in text.split('\n'):
        fields = line.split(':')
        if fields[0] == name and len(fields) >= 8:
            return fields[7]
    return None


def is_expired(value, today):
    try:
        return value not in (None, NEVER) and int(value) <= today
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------- files

def file_meta(path):
    """Owner, mode, extended attributes and times of ``path`` (not following a symlink)."""
    st = os.lstat(path)
    xattrs = {}
    try:
        for key in os.listxattr(path, follow_symlinks=False):
            xattrs[key] = base64.b64encode(os.getxattr(path, key, follow_symlinks=False)).decode('ascii')
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    return {'uid': st.st_uid, 'gid': st.st_gid, 'mode': stat.S_IMODE(st.st_mode), 'xattrs': xattrs,
            'atime_ns': st.st_atime_ns, 'mtime_ns': st.st_mtime_ns, 'ino': st.st_ino, 'dev': st.st_dev}


def read_file(path):
    """(bytes or None, symlink target or None, meta): a regular file's content or a symlink's target; raises
    LockoutError for anything else or a file too large to keep."""
    st = os.lstat(path)
    meta = file_meta(path)
    if stat.S_ISLNK(st.st_mode):
        return None, os.readlink(path), meta
    if not stat.S_ISREG(st.st_mode):
        raise LockoutError('%s is not a regular file' % path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise LockoutError('%s changed while it was read' % path)
        if fst.st_size > FILE_MAX:
            raise LockoutError('%s is %d bytes, more than the %d the quarantine keeps' % (path, fst.st_size, FILE_MAX))
        chunks, n = [], 0
        while n <= FILE_MAX:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        if n > FILE_MAX:
            raise LockoutError('%s grew past %d bytes while it was read' % (path, FILE_MAX))
    finally:
        os.close(fd)
    return b''.join(chunks), None, meta


def same_file(path, data, link, meta):
    """Whether ``path`` now holds exactly what a record describes (content, owner, mode, xattrs)."""
    try:
        now_data, now_link, now = read_file(path)
    except (OSError, LockoutError):
        return False
    return (now_data == data and now_link == link and
            all(now[k] == meta[k] for k in ('uid', 'gid', 'xattrs')) and (link is not None or now['mode'] == meta['mode']))


def describe_file(path):
    """A short, safe description of what is at ``path`` now (for a difference or a diff)."""
    try:
        data, link, meta = read_file(path)
    except OSError as e:
        return 'unreadable: %s' % e.strerror
    except LockoutError as e:
        return str(e)
    if link is not None:
        return 'a symlink to %s' % decode(link)
    return '%d bytes, sha256 %s, owner %d:%d, mode %04o' % (len(data), _sha256(data), meta['uid'], meta['gid'], meta['mode'])


def restore_file(path, data, link, meta):
    """Create ``path`` (which must not exist) with the recorded content, owner, mode, xattrs and times."""
    if link is not None:
        os.symlink(link, path)
        os.lchown(path, meta['uid'], meta['gid'])
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fchown(fd, meta['uid'], meta['gid'])
        os.fchmod(fd, meta['mode'])
        for key, value in sorted(meta['xattrs'].items()):
            os.setxattr(fd, key, base64.b64decode(value))
        os.utime(fd, ns=(meta['atime_ns'], meta['mtime_ns']))
        os.fsync(fd)
    finally:
        os.close(fd)


def expand_key_path(pattern, name, uid, home):
    """An AuthorizedKeysFile entry for one user, as sshd expands it; (path, shared) or (None, why)."""
    out, i, personal = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == '%' and i + 1 < len(pattern):
            token = pattern[i + 1]
            if token == '%':
                out.append('%')
            elif token in 'hUu':
                out.append({'h': home, 'u': name, 'U': str(uid)}[token])
                personal = True
            else:
                return None, 'unsupported token %%%s' % token
            i += 2
            continue
        out.append(c)
        i += 1
    path = ''.join(out)
    if not path.startswith('/'):
        path = os.path.join(home, path)
        personal = True
    return path, not personal


# --------------------------------------------------------------------------------------------- records

class Record(object):
    """What a lockout changed for one user, on disk as JSON, root-only."""

    def __init__(self, layout, name):
        self.layout, self.name = layout, name
        self.path = os.path.join(layout.records, record_key(name) + '.json')
        self.qdir = os.path.join(layout.quarantine, record_key(name))
        self.data = None

    def load(self):
        text = _read_text(self.path)
        self.data = json.loads(text) if text else None
        return self.data

    def start(self, uid, reason):
        if self.data is None:
            self.data = {'version': RECORD_VERSION, 'user': self.name, 'uid': uid, 'reason': reason,
                         'locked_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                         'expiry': None, 'files': []}
        return self.data

    def save(self):
        _write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode('utf-8'))

    def quarantine(self, kind, path, data, link, meta, added=False):
        """Keep a copy of ``path`` in the quarantine, record it, and only then remove the original."""
        if not os.path.isdir(self.qdir):
            os.mkdir(self.qdir, 0o700)
        n = len(self.data['files'])
        qname = '%03d-%s' % (n, kind)
        entry = {'kind': kind, 'path': self.layout.host_path(path), 'quarantine': qname, 'link': link,
                 'sha256': _sha256(data) if data is not None else None,
                 'size': len(data) if data is not None else None, 'added': added,
                 'parent': _parent_meta(path)}
        entry.update(dict((k, v) for k, v in meta.items() if k not in ('ino', 'dev')))
        if data is not None:
            _write_atomic(os.path.join(self.qdir, qname), data)
        self.data['files'].append(entry)
        self.save()
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) != (meta['dev'], meta['ino']):
            raise LockoutError('%s was replaced while it was moved; the copy taken is kept, the new file left' % path)
        os.unlink(path)
        return entry

    def kept(self, entry):
        """The quarantined bytes of ``entry`` (None for a symlink); raises LockoutError when they changed."""
        if entry['link'] is not None:
            return None
        try:
            with open(os.path.join(self.qdir, entry['quarantine']), 'rb') as f:
                data = f.read()
        except OSError as e:
            raise LockoutError('the quarantined copy of %s is gone: %s' % (entry['path'], e.strerror))
        if _sha256(data) != entry['sha256']:
            raise LockoutError('the quarantined copy of %s changed (sha256 %s, recorded %s)'
                               % (entry['path'], _sha256(data), entry['sha256']))
        return data

    def drop(self):
        for entry in self.data['files'] if self.data else ():
            q = os.path.join(self.qdir, entry['quarantine'])
            if os.path.lexists(q):
                os.unlink(q)
        if os.path.isdir(self.qdir):
            os.rmdir(self.qdir)
        if os.path.lexists(self.path):
            os.unlink(self.path)
        self.data = None


def _parent_meta(path):
    parent = os.path.dirname(path)
    st = os.stat(parent)
    return {'path': os.path.realpath(parent), 'uid': st.st_uid, 'gid': st.st_gid, 'mode': stat.S_IMODE(st.st_mode)}


def all_records(layout):
    out = []
    try:
        names = sorted(os.listdir(layout.records))
    except OSError:
        return out
    for fname in names:
        if fname.endswith('.json'):
            try:
                with open(os.path.join(layout.records, fname)) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            out.append(data)
    return out


def locked_out(layout):
    """The users locked out on this host, for the audit: name, UID, when, why, what is kept."""
    out = []
    for data in all_records(layout):
        out.append({'user': decode(data.get('user', '')), 'uid': data.get('uid'), 'locked_at': data.get('locked_at'),
                    'reason': decode(data.get('reason') or ''),
                    'kept': len(data.get('files', ())), 'expiry_changed': bool((data.get('expiry') or {}).get('set'))})
    known = set(e['user'] for e in out)
    try:
        denied = read_deny(layout)
    except OSError:
        denied = []     # without root the state is unreadable: nothing to report, not an error
    for name in denied:
        if decode(name) not in known:
            out.append({'user': decode(name), 'uid': None, 'locked_at': None, 'reason': '', 'kept': 0,
                        'expiry_changed': False})
    return out


# --------------------------------------------------------------------------------------------- the lockout

DEFAULT_KEY_FILES = ('.ssh/authorized_keys', '.ssh/authorized_keys2')   # sshd's compiled-in AuthorizedKeysFile
KEY_SOURCES = ('authorizedkeyscommand', 'trustedusercakeys', 'authorizedprincipalscommand', 'authorizedprincipalsfile')


class Entry(object):
    """One user named in the task: ``name`` None for a UID with no account; ``found`` False for a name that does not
    resolve on this host (still denied, so that the door is shut should the directory hand it out later)."""

    def __init__(self, name, uid, found):
        self.name, self.uid, self.found = name, uid, found


def _user_result(entry):
    return {'user': decode(entry.name) if entry.name is not None else None, 'uid': entry.uid, 'found': entry.found,
            'closed': [], 'already_closed': [], 'open': [], 'notes': []}


class Lockout(object):
    """Locks users out on this host (:meth:`present`) and lifts it (:meth:`absent`).

    ``run(argv)`` returns ``(rc, stdout, stderr)``; ``sshd`` is a :class:`_sshd.Sshd`.
    """

    def __init__(self, layout, sshd, run, check_mode=False, today=None):
        self.layout, self.sshd, self.run, self.check_mode = layout, sshd, run, check_mode
        self.today = today if today is not None else int(time.time() // 86400)
        self.diff, self.errors = [], []
        self.sshd_report = {'config': sshd.config, 'dropin': sshd.dropin, 'dropin_changed': False, 'reloaded': False,
                            'detail': None, 'use_pam': None, 'key_sources': {}}
        self.pam_report = {'file': PAM_SSHD, 'deny_file': DENY_FILE, 'present': False, 'changed': False}
        self._pidfile = None
        self._broken = False

    # ----------------------------------------------------------------------------------------- shared steps
    def _diff(self, header, before, after):
        self.diff.append({'before_header': header, 'after_header': header, 'before': before, 'after': after})

    def _locked(self, fn, *args):
        if self.check_mode:
            return fn(*args)
        with host_lock(self.layout):
            return fn(*args)

    def _settings(self, name):
        """sshd's settings for a login of ``name``; None (and the error noted once) when sshd -T fails."""
        try:
            settings = self.sshd.effective(name)
        except SshdError as e:
            if not self._broken and not any(str(e) in err for err in self.errors):
                self.errors.append('sshd -T failed: %s' % e)
            return None
        self._pidfile = (settings.get('pidfile') or [None])[0]
        self.sshd_report['use_pam'] = (settings.get('usepam') or [None])[0] == 'yes'
        for key in KEY_SOURCES:
            value = ' '.join(settings.get(key) or [])
            if value and value != 'none':
                self.sshd_report['key_sources'][key] = decode(value)
        return settings

    def _set_deny(self, names_after):
        """The deny list and the PAM line: the line is there exactly while the list has a name."""
        before = read_deny(self.layout)
        if names_after != before:
            self._diff(DENY_FILE, ''.join(decode(n) + '\n' for n in before), ''.join(decode(n) + '\n' for n in names_after))
        pam = _read_text(self.layout.pam_sshd)
        if pam is None:
            return before
        after = pam_with_line(pam) if names_after else pam_without_line(pam)
        self.pam_report['present'] = PAM_LINE in after.split('\n')
        if after != pam:
            self._diff(PAM_SSHD, pam, after)
            self.pam_report['changed'] = True
        if not self.check_mode:
            if names_after != before and names_after:
                write_deny(self.layout, names_after)
            if after != pam:
                write_pam(self.layout, after)
            if names_after != before and not names_after:
                write_deny(self.layout, names_after)
        return before

    def _set_dropin(self, want, check_names):
        """Rewrite the DenyUsers drop-in to hold ``want``; validate, check that sshd reads it, reload."""
        current = self.sshd.read_dropin()
        text = render_dropin(want)
        if text == current:
            return True
        self._diff(self.sshd.dropin, current or '', text or '')
        broken = self.sshd.check()
        if broken:
            self._broken = True
            self.errors.append('the sshd configuration does not validate, so the DenyUsers drop-in was not written '
                               'and sshd was not reloaded: %s' % broken)
            return False
        if self.check_mode:
            self.sshd_report['dropin_changed'] = True
            return True
        before = self.sshd.write_dropin(text)
        broken = self.sshd.check()
        if broken:
            self.sshd.write_dropin(before)
            self.errors.append('the DenyUsers drop-in did not validate and was removed again: %s' % broken)
            return False
        if check_names:
            settings = self._settings(check_names[0]) or {}
            if check_names[0] not in settings.get('denyusers', []):
                self.sshd.write_dropin(before)
                self.sshd_report['detail'] = ('sshd does not read %s (no Include of %s in %s); the PAM deny list '
                                              'covers every name' % (self.sshd.dropin, self.sshd.dropin_dir, self.sshd.config))
                return False
        self.sshd_report['dropin_changed'] = True
        if self._pidfile is None:
            self._settings(None)
        if self._pidfile in (None, 'none'):
            self.sshd_report['detail'] = 'sshd has no PidFile; the drop-in applies when sshd next reads its configuration'
            return True
        ok, detail = self.sshd.reload(self.layout.at(self._pidfile))
        self.sshd_report['reloaded'], self.sshd_report['detail'] = ok, detail
        if not ok and 'not running' not in detail:
            self.errors.append(detail)
        return True

    # ----------------------------------------------------------------------------------------- present
    def present(self, entries, reason=None, persistence='report'):
        return self._locked(self._present, entries, reason, persistence)

    def _present(self, entries, reason, persistence):
        results = [_user_result(e) for e in entries]
        names = [e.name for e in entries if e.name is not None]
        deny = read_deny(self.layout)
        before = self._set_deny(deny + [n for i, n in enumerate(names) if n not in deny and n not in names[:i]])
        pam_ok = self.pam_report['present']
        dropin_have = parse_dropin(self.sshd.read_dropin())
        plain = [n for n in names if expressible(n)]
        new_plain = [n for n in plain if n not in dropin_have]
        dropin_ok = self._set_dropin(dropin_have + new_plain, new_plain) if new_plain else True
        for entry, r in zip(entries, results):
            if entry.name is None:
                r['already_closed'].append('no account has UID %d on this host, so nobody can log in as it' % entry.uid)
                continue
            if entry.name in before:
                r['already_closed'].append('deny list')
            else:
                r['closed'].append('deny list')
            if not pam_ok:
                r['open'].append('sshd has no PAM file %s to enforce the deny list' % PAM_SSHD)
            if expressible(entry.name):
                if entry.name in dropin_have:
                    r['already_closed'].append('sshd DenyUsers')
                elif dropin_ok and self.sshd_report['dropin_changed']:
                    r['closed'].append('sshd DenyUsers')
            else:
                r['notes'].append('DenyUsers cannot express this name (sshd reads USER@HOST and patterns); '
                                  'the PAM deny list covers it')
            record = Record(self.layout, entry.name)
            record.load()
            if not self.check_mode:
                if record.data is None:
                    record.start(entry.uid, reason)
                    record.save()
            if not entry.found:
                r['notes'].append('no account of this name on this host; denied should one appear')
                continue
            settings = self._settings(entry.name)
            if settings is not None and settings.get('usepam') == ['no']:
                r['open'].append('sshd runs with UsePAM no, so only DenyUsers enforces the deny list')
                if not expressible(entry.name) or not dropin_ok:
                    r['open'].append('no DenyUsers entry either: sshd still accepts this user')
            self._expire(entry, r, record)
            self._keys(entry, r, record, settings)
            self._persistence(entry, r, record, persistence)
            self._sudo(entry, r)
        return self._result(results)

    def _expire(self, entry, r, record):
        current = shadow_expiry(self.layout, entry.name)
        kept = (record.data or {}).get('expiry') or {}
        if current is None:
            r['notes'].append('not a local account (no /etc/shadow entry): expiry does not apply; the deny list covers it')
        elif kept.get('set') is not None and current == kept['set']:
            r['already_closed'].append('account expiry')
        elif is_expired(current, self.today):
            r['already_closed'].append('account expiry (expired since %s)' % days_text(current))
            if not self.check_mode and not kept:
                record.data['expiry'] = {'previous': current, 'set': None}
                record.save()
        else:
            r['closed'].append('account expiry (was %s)' % days_text(current))
            self._diff('/etc/shadow: account expiry of %s' % decode(entry.name), days_text(current) + '\n', days_text(EXPIRED) + '\n')
            if not self.check_mode:
                record.data['expiry'] = {'previous': kept['previous'] if kept else current, 'set': EXPIRED}
                record.save()
                self._chage(entry.name, EXPIRED)

    def _chage(self, name, value):
        argv = ['chage']
        if self.layout.root not in ('', '/'):
            argv += ['-R', self.layout.root]
        rc, _out, err = self.run(argv + ['-E', value if value != NEVER else '-1', name])
        if rc != 0:
            raise LockoutError('chage -E %s %s failed: %s' % (value or '-1', name, decode(err.strip())))

    def _keys(self, entry, r, record, settings):
        try:
            pw = pwd.getpwnam(entry.name)
        except KeyError:
            r['open'].append('the account no longer resolves; its key files could not be found')
            return
        if settings is None:
            patterns = list(DEFAULT_KEY_FILES)
            r['notes'].append("sshd -T failed, so sshd's default AuthorizedKeysFile was used")
        else:
            patterns = ' '.join(settings.get('authorizedkeysfile') or []).split()
        kept = [f['path'] for f in (record.data or {}).get('files', []) if f['kind'] == 'key']
        for pattern in patterns:
            path, shared = expand_key_path(pattern, entry.name, pw.pw_uid, pw.pw_dir)
            if path is None:
                r['open'].append('AuthorizedKeysFile %s: %s' % (decode(pattern), shared))
                continue
            if shared:
                r['notes'].append('key file %s is every user\'s; left in place, the deny list covers it' % decode(path))
                continue
            self._move(r, record, 'key', 'key file', path, kept)
        for key, value in sorted(self.sshd_report['key_sources'].items()):
            r['notes'].append('%s %s is in use: the deny list covers the keys it gives' % (key, value))

    def _move(self, r, record, kind, label, path, kept):
        local = self.layout.at(path)
        what = '%s %s' % (label, decode(path))
        if not os.path.lexists(local):
            if path in kept:
                r['already_closed'].append(what + ' (in the quarantine)')
            return
        try:
            data, link, meta = read_file(local)
        except (OSError, LockoutError) as e:
            r['open'].append('%s: %s' % (what, decode(getattr(e, 'strerror', None) or str(e))))
            return
        added = path in kept
        r['closed'].append(what + (' (added during the lockout)' if added else '') + ' moved to the quarantine')
        self._diff(path, describe_file(local) + '\n', '(moved to the quarantine)\n')
        if not self.check_mode:
            record.quarantine(kind, local, data, link, meta, added=added)

    def _persistence(self, entry, r, record, persistence):
        found = persistence_items(self.layout, entry.name, entry.uid)
        report = {'crontab': False, 'crontab_lines': 0, 'at_jobs': [], 'at_job_count': 0, 'linger': False,
                  'sudo_timestamps': False}
        for kind, path in found:
            if kind == 'crontab':
                report['crontab'] = True
                try:
                    with open(path, 'rb') as f:
                        report['crontab_lines'] = sum(1 for line in f.read(FILE_MAX).split(b'\n')
                                                      if line.strip() and not line.lstrip().startswith(b'#'))
                except OSError:
                    pass
            elif kind == 'at':
                report['at_job_count'] += 1
                if len(report['at_jobs']) < LIST_MAX:
                    report['at_jobs'].append(decode(os.path.basename(path)))
            elif kind == 'linger':
                report['linger'] = True
        r['persistence'] = report
        kept = (record.data or {}).get('files', [])
        labels = {'crontab': 'crontab', 'at': 'at job', 'linger': 'linger flag'}
        for kind in ('crontab', 'at', 'linger'):
            if any(f['kind'] == kind for f in kept) and not any(k == kind for k, _p in found):
                r['already_closed'].append('%s (set aside)' % labels[kind])
        if persistence != 'disable':
            return
        paths = [f['path'] for f in kept]
        for kind, path in found:
            self._move(r, record, kind, labels[kind], self.layout.host_path(path), paths)

    def _sudo(self, entry, r):
        for d in sudo_dirs(self.layout):
            path = os.path.join(d, entry.name)
            if os.path.lexists(path):
                r['persistence']['sudo_timestamps'] = True
                r['closed'].append('sudo timestamps %s cleared' % decode(self.layout.host_path(path)))
                self._diff(self.layout.host_path(path), '(sudo timestamp records)\n', '')
                if not self.check_mode:
                    os.unlink(path)

    # ----------------------------------------------------------------------------------------- absent
    def absent(self, entries, force=False):
        return self._locked(self._absent, entries, force)

    def _absent(self, entries, force):
        results = [_user_result(e) for e in entries]
        lifted = []
        deny = read_deny(self.layout)
        for entry, r in zip(entries, results):
            r['restored'], r['refused'], r['kept_aside'] = [], [], []
            if entry.name is None:
                r['notes'].append('no account has UID %d on this host; a lockout is lifted by name' % entry.uid)
                continue
            record = Record(self.layout, entry.name)
            record.load()
            if record.data is None and entry.name not in deny:
                r['notes'].append('not locked out on this host: nothing to lift')
                continue
            plan, differences = self._restore_plan(entry, record)
            if differences and not force:
                r['refused'] = differences
                continue
            if differences:
                r['notes'].append('force: lifted despite the differences; what was there now is kept aside')
                r['refused'] = []
                r['differences'] = differences
            self._restore(entry, r, record, plan)
            lifted.append(entry.name)
        remaining = [n for n in deny if n not in lifted]
        self._set_deny(remaining)
        for name in lifted:
            if name in deny:
                results[[e.name for e in entries].index(name)]['restored'].append('deny list')
        dropin_have = parse_dropin(self.sshd.read_dropin())
        gone = [n for n in dropin_have if n in lifted]
        if gone:
            if self._set_dropin([n for n in dropin_have if n not in lifted], []):
                for name in gone:
                    results[[e.name for e in entries].index(name)]['restored'].append('sshd DenyUsers')
            else:
                for name in gone:
                    results[[e.name for e in entries].index(name)]['open'].append(
                        'sshd DenyUsers still names this user until the sshd configuration validates; run again then')
        return self._result(results)

    def _restore_plan(self, entry, record):
        plan, differences = [], []
        data = record.data or {'files': [], 'expiry': None}
        for f in data['files']:
            local = self.layout.at(f['path'])
            try:
                kept = record.kept(f)
            except LockoutError as e:
                differences.append(str(e))
                continue
            if f['added']:
                differences.append('%s was added during the lockout (%s bytes, sha256 %s); it stays in the quarantine'
                                   % (decode(f['path']), f['size'], f['sha256']))
                plan.append(('aside', f, kept))
                continue
            parent = os.path.dirname(local)
            if os.path.isdir(parent) and os.path.realpath(parent) != f['parent']['path']:
                differences.append('%s: its directory now resolves to %s, not %s'
                                   % (decode(f['path']), decode(os.path.realpath(parent)), decode(f['parent']['path'])))
                continue
            if os.path.lexists(local):
                if same_file(local, kept, f['link'], f):
                    plan.append(('already', f, kept))
                    continue
                differences.append('%s: now %s; the lockout moved away %s' % (
                    decode(f['path']), describe_file(local),
                    'a symlink to %s' % decode(f['link']) if f['link'] is not None else
                    '%d bytes, sha256 %s, owner %d:%d, mode %04o' % (f['size'], f['sha256'], f['uid'], f['gid'], f['mode'])))
                plan.append(('replace', f, kept))
            else:
                plan.append(('restore', f, kept))
        exp = data.get('expiry') or {}
        if exp.get('set') is not None:
            current = shadow_expiry(self.layout, entry.name)
            if current is None:
                differences.append('account expiry: %s is no longer in /etc/shadow' % decode(entry.name))
            else:
                if current != exp['set']:
                    differences.append('account expiry: now %s; the lockout set %s, and it was %s before' % (
                        days_text(current), days_text(exp['set']), days_text(exp['previous'])))
                plan.append(('expiry', exp, current))
        return plan, differences

    def _restore(self, entry, r, record, plan):
        aside = None
        for action, f, kept in plan:
            if action == 'expiry':
                r['restored'].append('account expiry (%s)' % days_text(f['previous']))
                self._diff('/etc/shadow: account expiry of %s' % decode(entry.name), days_text(kept) + '\n',
                           days_text(f['previous']) + '\n')
                if not self.check_mode:
                    self._chage(entry.name, f['previous'])
                continue
            label = '%s %s' % ({'key': 'key file', 'at': 'at job', 'linger': 'linger flag'}.get(f['kind'], f['kind']),
                               decode(f['path']))
            local = self.layout.at(f['path'])
            if action == 'already':
                r['restored'].append(label + ' (was already back)')
                continue
            if action in ('aside', 'replace'):
                if aside is None:
                    aside = os.path.join(self.layout.quarantine, '%s.kept-%s' % (record_key(entry.name),
                                                                                 time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())))
                if action == 'aside':
                    r['kept_aside'].append('%s (added during the lockout) -> %s' % (decode(f['path']), decode(aside)))
                    if not self.check_mode:
                        _keep_aside(aside, f['quarantine'], kept, f['link'])
                    continue
                r['kept_aside'].append('%s as it was before this restore -> %s' % (decode(f['path']), decode(aside)))
                if not self.check_mode:
                    data, link, _meta = read_file(local)
                    _keep_aside(aside, f['quarantine'] + '-found', data, link)
                    os.unlink(local)
            r['restored'].append(label)
            self._diff(f['path'], '(in the quarantine)\n', '%s\n' % ('a symlink to %s' % decode(f['link']) if f['link'] is not None
                                                                     else '%d bytes, sha256 %s' % (f['size'], f['sha256'])))
            if not self.check_mode:
                parent = os.path.dirname(local)
                if not os.path.isdir(parent):
                    os.mkdir(parent, f['parent']['mode'])
                    os.chown(parent, f['parent']['uid'], f['parent']['gid'])
                restore_file(local, kept, f['link'], f)
        if not self.check_mode:
            record.drop()
            if any(f['kind'] == 'at' for _a, f, _k in plan if isinstance(f, dict) and 'kind' in f):
                poke_atd(self.layout)

    # ----------------------------------------------------------------------------------------- result
    def _result(self, results):
        changed = bool(self.diff)
        return {'changed': changed, 'users': results, 'pam': self.pam_report, 'sshd': self.sshd_report,
                'errors': self.errors, 'diff': self.diff}


# --------------------------------------------------------------------------------------------- as a module runs it
def refusal(targets, absent, protected_users, sshd_bin, state='present'):
    """Why the lockout must not start on this host, or None. Checked before anything changes: a protected user
    (O(state=present) only: lifting a lockout shuts nobody out), not root, no sshd."""
    if state == 'present':
        try:
            protected(list(targets) + list(absent), protected_users, task_owners())
        except UserError as e:
            return str(e)
    if os.geteuid() != 0:
        return 'lockout must run as root (become: true)'
    if sshd_bin is None:
        return 'sshd not found on this host (looked on PATH, %s)' % ', '.join(SSHD_DIRS)
    return None


def run_lockout(run, sshd_bin, sshd_config, targets, absent, state='present', reason=None, persistence='report',
                force=False, check_mode=False, diff=False):
    """Lock the resolved ``targets`` (and the names in ``absent``) out, or lift it; after :func:`refusal`.

    Returns ``(result, problems)``: the lockout module's result (its ``diff`` only when ``diff``) and what failed
    on the host, each a sentence; the lockout module fails with them. A lockout that stopped part-way
    (LockoutError, OSError) gives only ``changed`` and ``errors`` and one problem, ``lockout failed: ...``.
    """
    entries = [Entry(t.name, t.uid, t.name is not None) for t in targets]
    entries += [Entry(name, None, False) for name in absent]
    lockout = Lockout(Layout(), Sshd(run, sshd_bin, sshd_config), run, check_mode=check_mode)
    try:
        if state == 'present':
            result = lockout.present(entries, reason=reason, persistence=persistence)
        else:
            result = lockout.absent(entries, force=force)
    except (LockoutError, OSError) as e:
        return {'changed': bool(lockout.diff), 'errors': lockout.errors}, ['lockout failed: %s' % e]
    result['absent_users'] = list(absent)
    changes = result.pop('diff')
    if diff:
        result['diff'] = changes
    problems = list(result['errors'])
    for r in result['users']:
        problems += ['%s: %s' % (r['user'], o) for o in r['open']]
        if r.get('refused'):
            problems.append('%s: not lifted, changed since the lockout (force=true lifts it anyway): %s'
                            % (r['user'], '; '.join(r['refused'])))
    return result, problems


def _keep_aside(directory, name, data, link):
    if not os.path.isdir(directory):
        os.mkdir(directory, 0o700)
    path = os.path.join(directory, name)
    if link is not None:
        os.symlink(link, path)
    else:
        _write_atomic(path, data)


def sudo_dirs(layout):
    seen, out = set(), []
    for d in layout.sudo_ts:
        real = os.path.realpath(d)
        if real not in seen and os.path.isdir(d):
            seen.add(real)
            out.append(d)
    return out


def persistence_items(layout, name, uid):
    """[(kind, path)]: the user's crontab, at jobs and linger flag, as they are now."""
    found = []
    for d in layout.crontab_dirs:
        path = os.path.join(d, name)
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                found.append(('crontab', path))
                break
        except OSError:
            pass
    for d in layout.at_dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for job in names:
            if job.startswith(('.', '=')):
                continue    # the queue's sequence file, and jobs atd is running right now
            path = os.path.join(d, job)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_uid == uid:
                found.append(('at', path))
        break
    path = os.path.join(layout.linger, name)
    if os.path.lexists(path):
        found.append(('linger', path))
    return found


def poke_atd(layout):
    """Tell atd to read its queue again (SIGHUP, what at(1) does), so a job put back runs on time."""
    try:
        with open(layout.atd_pid) as f:
            os.kill(int(f.read(32).strip()), signal.SIGHUP)
    except (OSError, ValueError):
        pass

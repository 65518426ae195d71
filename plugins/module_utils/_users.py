# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Validating and resolving the users a task names.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import annotations

import os
import pwd
import re

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import UNSET_ID, read_loginuid

# The portable grammar (what useradd accepts on Debian and RHEL; a trailing $ marks Samba machine accounts). It
# only applies to names the host cannot resolve: a name NSS resolves (SSSD, AD, LDAP: ``Bob.Smith@corp.example``,
# ``CORP\\bob``, mixed case, long) is taken as the directory spells it.
NAME_RE = re.compile(r'[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?')
NAME_RULE = ('a user name that resolves on the host, or one of letters, digits, "_", "." and "-" starting with a '
             'letter or "_", at most 32 characters; or a numeric UID')
# Never part of a user name anywhere, whatever resolves it: field separators of passwd and paths, and Jinja
# markers that would be templated on their way through a survey or a role.
_NEVER = re.compile(r'[\s:/\x00-\x1f\x7f-\x9f]|\{\{|\{%|\{#')
_UID_RE = re.compile(r'[0-9]+')
MAX_UID = 4294967294
# UIDs the kernel uses for "nobody" when a mapping fails; never a real person.
OVERFLOW_UIDS = (65534, 4294967294)


class UserError(ValueError):
    pass


class Target(object):
    """A user to act on: ``name`` is None for a numeric UID with no account on this host."""

    __slots__ = ('spec', 'uid', 'name')

    def __init__(self, spec, uid, name):
        self.spec, self.uid, self.name = spec, uid, name

    @property
    def label(self):
        return self.name if self.name is not None else str(self.uid)


def login_defs(path='/etc/login.defs'):
    values = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and not parts[0].startswith('#'):
                    values[parts[0]] = parts[1]
    except OSError:
        pass
    return values


def uid_min(path='/etc/login.defs'):
    try:
        return int(login_defs(path).get('UID_MIN', 1000))
    except ValueError:
        return 1000


def resolve(specs, allow_system_users=False, login_defs_path='/etc/login.defs'):
    """Validate every spec before anything happens; return (targets, absent names).

    Raises UserError naming the bad value and what would be accepted.
    """
    if not specs:
        raise UserError('users must name at least one user; got an empty list. Give %s.' % NAME_RULE)
    lowest = uid_min(login_defs_path)
    targets, absent, seen = [], [], set()
    for raw in specs:
        uid, name = _parse(raw)
        if uid is None:
            try:
                ent = pwd.getpwnam(name)
            except KeyError:
                if not NAME_RE.fullmatch(name):
                    raise UserError('users: %r is not a valid user; expected %s.' % (raw, NAME_RULE))
                absent.append(name)
                continue
            uid, name = ent.pw_uid, ent.pw_name
        else:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = None
        _check_system(raw, uid, lowest, allow_system_users)
        if uid not in seen:
            seen.add(uid)
            targets.append(Target(str(raw), uid, name))
    return targets, absent


def _parse(raw):
    """(uid, None) for a numeric UID, (None, name) for a name; UserError for anything else, naming it."""
    if isinstance(raw, bool) or raw is None or isinstance(raw, float):
        raise UserError('users: %r is not a user; expected %s.' % (raw, NAME_RULE))
    spec = str(raw)
    if not spec:
        raise UserError('users: %r is empty; expected %s.' % (raw, NAME_RULE))
    # str.isdigit() would take '\u00b2' or Arabic-Indic digits for a UID: only ASCII digits are one.
    if _UID_RE.fullmatch(spec):
        uid = int(spec)
        if uid > MAX_UID:
            raise UserError('users: %r is not a valid UID; UIDs go from 0 to %d.' % (raw, MAX_UID))
        return uid, None
    if _NEVER.search(spec) or spec.startswith('-'):
        raise UserError('users: %r is not a valid user; expected %s.' % (raw, NAME_RULE))
    return None, spec


def _check_system(raw, uid, lowest, allow):
    if allow:
        return
    if uid == 0:
        raise UserError('users: %r is root (UID 0); refusing to act on root. '
                        'Set allow_system_users=true to allow it.' % (raw,))
    if uid < lowest or uid in OVERFLOW_UIDS:
        raise UserError('users: %r has UID %d, a system account (below UID_MIN %d in /etc/login.defs, '
                        'or the overflow UID); refusing. Name a regular user, or set '
                        'allow_system_users=true.' % (raw, uid, lowest))


def task_owners(environ=None):
    """(uid, why) of the people behind this task: the user whose login runs it (its loginuid, kept across sudo
    and become) and, under sudo, the user who ran sudo. Locking either out would shut the operator out of the
    host they are working on."""
    environ = os.environ if environ is None else environ
    login = read_loginuid()
    own = [(login, 'the user who logged in to run this task')] if login not in (None, UNSET_ID) else []
    if environ.get('SUDO_UID', '').isdigit():
        own.append((int(environ['SUDO_UID']), 'the user who ran sudo for this task'))
    return own


def protected(targets, specs, own=()):
    """Raise UserError naming the first of ``targets`` (Targets, or names that do not resolve) that is protected:
    named in ``specs`` (names or UIDs), or one of ``own`` ((uid, why) pairs the caller knows, such as its login)."""
    guarded = []
    for raw in specs:
        try:
            uid, name = _parse(raw)
        except UserError as e:
            raise UserError('protected_users: ' + str(e).split(': ', 1)[1])
        if uid is None:
            try:
                ent = pwd.getpwnam(name)
                uid, name = ent.pw_uid, ent.pw_name
            except KeyError:
                pass
        else:
            name = name_of(uid)
        guarded.append((uid, name, 'named in protected_users'))
    guarded.extend((uid, name_of(uid), why) for uid, why in own)
    for t in targets:
        spec, uid, name = (t.spec, t.uid, t.name) if isinstance(t, Target) else (t, None, t)
        for g_uid, g_name, why in guarded:
            if (uid is not None and uid == g_uid) or (name is not None and name == g_name):
                raise UserError('users: %r is protected (%s); refusing to lock it out. Nothing was changed.' % (spec, why))


def name_of(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None

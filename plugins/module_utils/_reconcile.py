# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Who on this host should not be here any more, according to the identity source.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Everything goes through NSS (the same lookups ``getent`` makes), so users and groups from LDAP, SSSD or FreeIPA
count as much as local ones. A lookup that fails must never look like "nobody is allowed": an allowed group that
does not resolve, or resolves with no members, is an error; a UID whose name does not resolve (every directory user
during a directory outage) is never a candidate.
"""

from __future__ import annotations

import grp
import os
import pwd
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._procfs import PROC, Snapshot, make_reader, own_chain
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import OVERFLOW_UIDS, UserError, _parse, uid_min


class ReconcileError(ValueError):
    pass


def allowed_groups(names):
    """{name: (gid, member names)} of the allowed groups; ReconcileError naming the first that is empty or does not
    resolve."""
    if not names:
        raise ReconcileError('allowed_groups must name at least one group; got an empty list. With no group, everyone '
                             'would be outside: refusing.')
    out = {}
    for name in names:
        if not isinstance(name, str) or not name or name.strip() != name:
            raise ReconcileError('allowed_groups: %r is not a group name.' % (name,))
        try:
            g = grp.getgrnam(name)
        except KeyError:
            raise ReconcileError('allowed_groups: group %r does not resolve on this host (getent group %s finds '
                                 'nothing: a typo, or the directory is unreachable). Nothing was revoked.' % (name, name))
        if not g.gr_mem:
            raise ReconcileError('allowed_groups: group %r (gid %d) resolves with no members listed; an empty group '
                                 'would put everyone outside. Nothing was revoked.' % (name, g.gr_gid))
        out[name] = (g.gr_gid, set(g.gr_mem))
    return out


def shadow_state(name, getent_shadow, today):
    """([reasons], shadow line found) from the user's shadow entry through NSS: expired (the expiry day has come,
    as pam_unix judges it) or locked (a password hash disabled with ``usermod -L``: ``!`` before a hash; a bare
    ``!`` or ``*`` is an account without a password, which logs in with keys, not a locked one)."""
    line = getent_shadow(name)
    if not line:
        return [], False
    fields = line.rstrip('\n').split(':')
    reasons = []
    if len(fields) > 7 and fields[7].strip().isdigit() and today >= int(fields[7]):
        day = time.strftime('%Y-%m-%d', time.gmtime(int(fields[7]) * 86400))
        reasons.append('account expired on %s' % day)
    if len(fields) > 1 and fields[1].startswith('!') and len(fields[1].lstrip('!')) > 1:
        reasons.append('account locked')
    return reasons, True


def _protected(specs, owners):
    uids, names = set(uid for uid, _why in owners), set()
    for raw in specs:
        try:
            uid, name = _parse(raw)
        except UserError as e:
            raise ReconcileError('protected_users: ' + str(e).split(': ', 1)[1])
        if uid is not None:
            uids.add(uid)
        else:
            names.add(name)
    return uids, names


def plan(groups, protected_users, owners, getent_shadow, root=PROC, prefer_psutil=True, now=None):
    """Per user with processes on this host, whether to revoke them and why.

    Returns {groups, revoke: [{user, uid, reasons, processes}], skipped: [{uid, user, why, processes}], kept}.
    """
    allowed = allowed_groups(groups)
    prot_uids, prot_names = _protected(protected_users, owners)
    lowest = uid_min()
    today = int((time.time() if now is None else now) // 86400)
    snap = Snapshot(make_reader(prefer_psutil, root))
    mine = set(own_chain(root))
    counts = {}
    for p in snap:
        if p.zombie or p.kernel_thread or p.pid in mine:
            continue
        if p.uid >= lowest and p.uid not in OVERFLOW_UIDS:
            counts[p.uid] = counts.get(p.uid, 0) + 1
    revoke, skipped, kept = [], [], 0
    gids = set(gid for gid, _members in allowed.values())
    for uid in sorted(counts):
        try:
            ent = pwd.getpwuid(uid)
        except KeyError:
            skipped.append({'uid': uid, 'user': None, 'processes': counts[uid],
                            'why': 'no name resolves for this UID (a deleted user, or the directory is unreachable) - '
                                   'never revoked by reconcile'})
            continue
        name = ent.pw_name
        if uid in prot_uids or name in prot_names:
            skipped.append({'uid': uid, 'user': name, 'processes': counts[uid], 'why': 'protected'})
            continue
        member = (ent.pw_gid in gids or any(name in members for _gid, members in allowed.values())
                  or bool(gids.intersection(os.getgrouplist(name, ent.pw_gid))))
        reasons = [] if member else ['not in groups %s' % ', '.join(sorted(allowed))]
        reasons += shadow_state(name, getent_shadow, today)[0]
        if reasons:
            revoke.append({'user': name, 'uid': uid, 'reasons': reasons, 'processes': counts[uid]})
        else:
            kept += 1
    return {
        'groups': [{'name': n, 'gid': gid, 'members': len(m)} for n, (gid, m) in sorted(allowed.items())],
        'revoke': revoke,
        'skipped': skipped,
        'kept': kept,
    }

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.sessionguard.mosh.plugins.module_utils._users import UserError, resolve, task_owners


@pytest.mark.parametrize('spec, needle', [
    ([], 'empty list'),
    (['root'], "'root' is root"),
    ([0], "0 is root"),
    (['daemon'], "'daemon' has UID 1"),
    (['bad name'], "'bad name' is not a valid user"),
    (['-rf'], "'-rf' is not a valid user"),
    (['x' * 40], 'is not a valid user'),
    ([99999999999], 'is not a valid UID'),
    (['\u00b2'], "'\u00b2' is not a valid user"),
    (['\u0661\u0660\u0660\u0661'], 'is not a valid user'),
    ([True], 'True is not a user'),
    ([1.5], '1.5 is not a user'),
    (['1001\n'], 'is not a valid user'),
    ([' bob'], "' bob' is not a valid user"),
    (['bob:x'], "'bob:x' is not a valid user"),
    (['../bob'], "'../bob' is not a valid user"),
    (['{{ lookup("pipe", "id") }}'], 'is not a valid user'),
    (['bo\x1bb'], 'is not a valid user'),
    ([''], 'is empty'),
])
def test_bad_users_are_refused_with_the_value_named(spec, needle):
    with pytest.raises(UserError) as e:
        resolve(spec)
    assert needle in str(e.value)


def test_absent_names_and_unknown_uids():
    targets, absent = resolve(['no-such-user-sg', 4000000])
    assert absent == ['no-such-user-sg']
    assert [(t.uid, t.name) for t in targets] == [(4000000, None)]


def test_system_users_allowed_when_asked():
    targets, _absent = resolve(['root'], allow_system_users=True)
    assert targets[0].uid == 0


def test_login_defs_uid_min_is_honoured(tmp_path):
    defs = tmp_path / 'login.defs'
    defs.write_text('UID_MIN 5000000\n')
    with pytest.raises(UserError) as e:
        resolve([4000000], login_defs_path=str(defs))
    assert 'UID_MIN 5000000' in str(e.value)


def test_names_the_directory_resolves_are_taken_as_spelled(monkeypatch):
    """SSSD/AD names break the portable grammar (@, mixed case, longer than 32); NSS resolving them is enough."""
    import pwd
    long_name = 'Bob.Smith.With.A.Very.Long.Name@corp.example'
    ent = pwd.struct_passwd((long_name, 'x', 4000001, 4000001, '', '/home/b', '/bin/sh'))

    def getpwnam(name):
        if name != long_name:
            raise KeyError(name)
        return ent

    monkeypatch.setattr(pwd, 'getpwnam', getpwnam)
    targets, absent = resolve([long_name])
    assert [(t.uid, t.name) for t in targets] == [(4000001, long_name)] and absent == []
    with pytest.raises(UserError) as e:
        resolve(['Unknown@corp.example'])
    assert "'Unknown@corp.example' is not a valid user" in str(e.value)


def test_the_user_who_ran_sudo_is_one_of_the_task_owners():
    assert (1234, 'the user who ran sudo for this task') in task_owners({'SUDO_UID': '1234'})
    assert all(why != 'the user who ran sudo for this task' for _uid, why in task_owners({'SUDO_UID': '12a'}))

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.sessionguard.mosh.plugins.filter.user_list import user_list


@pytest.mark.parametrize('value, expected', [
    # An AWX survey textarea: lines joined with \n (\r\n from some browsers), a trailing newline.
    ('bob\nalice\n', ['bob', 'alice']),
    ('bob\r\nalice\r\n', ['bob', 'alice']),
    ('bob, alice  carol', ['bob', 'alice', 'carol']),
    ('  \n\n', []),
    ('', []),
    (None, []),
    (['bob', 'alice', 'bob'], ['bob', 'alice']),
    (['bob', 1001, '1002'], ['bob', '1001', '1002']),
    ([' bob '], ['bob']),
    (1001, ['1001']),
    ('Bob.Smith@corp.example', ['Bob.Smith@corp.example']),
])
def test_normalizes(value, expected):
    assert user_list(value) == expected


@pytest.mark.parametrize('value, needle', [
    ("bob\n{{ lookup('pipe', 'id') }}", "\"{{ lookup('pipe', 'id') }}\" is not a valid user"),
    ('{% raw %}x', "'{% raw %}x' is not a valid user"),
    (['{#x#}'], "'{#x#}' is not a valid user"),
    (['bob alice'], "'bob alice' is not one user name"),
    (['bob,alice'], "'bob,alice' is not one user name"),
    ([True], 'True is not a user'),
    ([1.5], '1.5 is not a user'),
    ([None], 'None is not a user'),
    (1.5, 'got float 1.5'),
    (True, 'got bool True'),
    ({'bob': 1}, "got dict {'bob': 1}"),
    ('bob:x', "'bob:x' is not a valid user"),
    ('../bob', "'../bob' is not a valid user"),
    ('-rf', "'-rf' is not a valid user"),
    ('bo\x1bb', 'is not a valid user'),
    ([99999999999], 'is not a valid UID'),
])
def test_refuses_naming_the_value(value, needle):
    with pytest.raises(AnsibleFilterError, match='^user_list: ') as e:
        user_list(value)
    assert needle in str(e.value)


@pytest.mark.parametrize('value', ['', '\n', [], None])
def test_required(value):
    assert user_list(value) == []
    with pytest.raises(AnsibleFilterError, match='no user given'):
        user_list(value, required=True)

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: user_list
short_description: Turn users given as a list, a textarea or a comma-separated string into a list of names
version_added: 1.0.0
description:
  - The one place where the collection's playbooks normalize the users they are given, so that a survey's
    textarea (one name per line), a comma- or space-separated string and a list all mean the same.
  - A role argument spec of C(type=list) splits a string on commas only, so V(bob\\nalice) would be taken as one
    name; the roles take their users as C(raw) and pass them through this filter.
  - Splits strings on newlines, commas and whitespace, drops empty entries and repeats (keeping the first),
    and turns numeric UIDs given as integers into strings.
  - Every entry is checked before anything runs, and a bad one fails naming it - a Jinja marker (C({{), C({%),
    C({#)), whitespace inside a list entry, a colon, a slash, a control character, a leading dash, a boolean, a
    float, a dict or C(null). Strings are never templated here; AWX's C(!unsafe) answers stay literal.
  - Whether a name exists is up to each host (the modules resolve it); this filter only refuses what is a user
    name nowhere.
author:
  - sessionguard maintainers (@sessionguard)
options:
  _input:
    description: The users, as a list of names or UIDs, or a string of them separated by newlines, commas or spaces.
    type: raw
    required: true
  required:
    description: Fail when no user is left after normalizing.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A survey textarea
  ansible.builtin.debug:
    msg: "{{ 'bob\nalice\n' | sessionguard.mosh.user_list }}"   # ['bob', 'alice']

- name: What a role does with its users
  ansible.builtin.set_fact:
    revoke_user_list: "{{ revoke_users | sessionguard.mosh.user_list(required=true) }}"
"""

RETURN = r"""
_value:
  description: The users, in the order given, without repeats.
  type: list
  elements: str
"""

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.sessionguard.mosh.plugins.module_utils._users import NAME_RULE, UserError, _parse

# A survey textarea joins lines with \n (\r\n from some browsers); people also type commas and spaces.
_SEPARATORS = re.compile(r'[\s,]+')
# Checked on a whole line before it is split, so that the error names what was typed, not a fragment of it.
_JINJA = re.compile(r'\{\{|\{%|\{#')


def user_list(value, required=False):
    if value is None:
        items = []
    elif isinstance(value, str):
        items = _split(value)
    elif isinstance(value, (list, tuple)):
        items = []
        for entry in value:
            if isinstance(entry, str):
                # A list entry is one name: "bob alice" in a list is a mistake, not two users.
                entry = entry.strip()
                if _SEPARATORS.search(entry):
                    raise AnsibleFilterError('user_list: %r is not one user name; a list takes one name or UID per '
                                             'entry (%s).' % (to_text(entry), NAME_RULE))
            items.append(entry)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        raise AnsibleFilterError('user_list: expected a list of users or a string of them (one per line, or separated '
                                 'by commas or spaces); got %s %r.' % (type(value).__name__, value))
    out = []
    for entry in items:
        if isinstance(entry, str) and not entry:
            continue
        try:
            _parse(entry)
        except UserError as e:
            raise AnsibleFilterError('user_list: %s' % to_text(e))
        name = to_text(entry)
        if name not in out:
            out.append(name)
    if required and not out:
        raise AnsibleFilterError('user_list: no user given (got %r); expected at least one, %s.' % (value, NAME_RULE))
    return out


def _split(text):
    parts = []
    for line in text.splitlines():
        if _JINJA.search(line):
            raise AnsibleFilterError('user_list: %r is not a valid user; expected %s.' % (to_text(line.strip()), NAME_RULE))
        parts.extend(part for part in _SEPARATORS.split(line) if part)
    return parts


class FilterModule(object):
    def filters(self):
        return {'user_list': user_list}

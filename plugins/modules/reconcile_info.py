#!/usr/bin/python
# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: reconcile_info
short_description: Find the users on a host that the identity source no longer allows
version_added: 1.1.0
description:
  - Lists every non-system user (UID at least C(UID_MIN)) with processes on the host who belongs to none of
    O(allowed_groups), or whose account is expired or locked, with the reasons. It changes nothing; the
    C(sessionguard.mosh.reconcile) playbook hands the list to the C(sessionguard.mosh.revoke) role.
  - Users and groups are looked up through NSS, as C(getent) does, so LDAP, SSSD and FreeIPA users and groups count.
    Membership is the group's member list, the user's primary group, or the groups NSS gives the user at login.
  - An allowed group that does not resolve, or resolves with no members listed, fails the task; so does an empty
    O(allowed_groups). A broken lookup must not put everyone outside.
  - A UID whose name does not resolve (a deleted user, or every directory user while the directory is unreachable)
    is never listed for revocation, only in RV(skipped). Nor is a protected user.
  - Expired means the account's expiry day (C(chage -E)) has come. Locked means a password hash disabled with
    C(usermod -L) or C(passwd -l) (C(!) before a hash); a bare C(!) or C(*) is an account without a password, which
    logs in with keys, and is not taken for locked.
author:
  - sessionguard maintainers (@sessionguard)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - sessionguard.mosh._target
attributes:
  check_mode:
    support: full
    details:
      - This module does not modify state.
  diff_mode:
    support: N/A
    details:
      - This module does not modify state.
  platform:
    platforms: linux
options:
  allowed_groups:
    description: Users in any of these groups may stay.
    type: list
    elements: str
    required: true
  protected_users:
    description:
      - Never listed, whatever the groups say (names or numeric UIDs), such as the connection user.
      - The user who logged in to run this task (its audit loginuid, and C(SUDO_UID)) is always protected.
    type: list
    elements: raw
    default: []
seealso:
  - module: sessionguard.mosh.revoke_sessions
  - module: sessionguard.mosh.lockout
"""

EXAMPLES = r"""
---
- name: Who should not be on this host any more
  sessionguard.mosh.reconcile_info:
    allowed_groups: [staff, contractors]
    protected_users: [ops]
  become: true
  register: plan

- name: Show them
  ansible.builtin.debug:
    msg: "{{ item.user }}: {{ item.reasons | join('; ') }}"
  loop: "{{ plan.revoke }}"
"""

RETURN = r"""
revoke:
  description: The users to revoke on this host, with why.
  returned: always
  type: list
  elements: dict
  sample: [{user: bob, uid: 1001, reasons: [not in groups staff], processes: 4}]
skipped:
  description: Users with processes that are never revoked here, with why (no name resolves, protected).
  returned: always
  type: list
  elements: dict
  sample: [{uid: 45001, user: null, why: "no name resolves for this UID", processes: 2}]
kept:
  description: Number of users with processes who are allowed.
  returned: always
  type: int
groups:
  description: The allowed groups as they resolved, with their GID and how many members they list.
  returned: always
  type: list
  elements: dict
  sample: [{name: staff, gid: 5000, members: 12}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sessionguard.mosh.plugins.module_utils._reconcile import ReconcileError, plan
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import task_owners


def main():
    module = AnsibleModule(
        argument_spec=dict(
            allowed_groups=dict(type='list', elements='str', required=True),
            protected_users=dict(type='list', elements='raw', default=[]),
        ),
        supports_check_mode=True,
    )
    getent = module.get_bin_path('getent', required=True)

    def getent_shadow(name):
        rc, out, _err = module.run_command([getent, 'shadow', name])
        return out if rc == 0 else None

    try:
        found = plan(module.params['allowed_groups'], module.params['protected_users'], task_owners(), getent_shadow)
    except ReconcileError as e:
        module.fail_json(msg=str(e))
    module.exit_json(changed=False, **found)


if __name__ == '__main__':
    main()

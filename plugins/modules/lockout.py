#!/usr/bin/python
# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: lockout
short_description: Lock users out of a host for every identity source and login method, and lift it exactly
description:
  - With O(state=present) the users can no longer log in to the host, whatever their account comes from
    (C(/etc/passwd), LDAP, SSSD) and however they authenticate (keys, certificates, C(AuthorizedKeysCommand) keys,
    passwords, keyboard-interactive), and so cannot start a new C(mosh) either. The lockout lives on the host and
    holds while the controller is away.
  - "A deny list, C(/var/lib/sessionguard/deny), is enforced by a C(pam_listfile) entry placed first in the account
    stack of sshd's PAM file C(/etc/pam.d/sshd). PAM files are read at every login, and sshd runs the account stack
    after every successful authentication when C(UsePAM yes), so this applies at once and takes any name,
    C(Bob.Smith@corp.example) included."
  - Names sshd can express are also written as C(DenyUsers) to the drop-in C(sshd_config.d/sessionguard-lockout.conf)
    next to O(sshd_config), which sshd checks for every method even with C(UsePAM no). The configuration is validated
    with C(sshd -t) before sshd is reloaded; when the host's configuration does not validate, the drop-in is not
    written, sshd is left exactly as it was, the rest of the lockout still happens, and the task fails with the
    configuration error.
  - Local accounts (in C(/etc/shadow)) are expired; the previous expiry is remembered. C(passwd -l) alone would not
    stop a key login.
  - Every C(AuthorizedKeysFile) sshd would read for the user (asked with C(sshd -T -C)) is moved to a root-only
    quarantine, recording owner, mode, extended attributes and checksum. An C(AuthorizedKeysCommand) or
    C(TrustedUserCAKeys) in use is reported; the deny list covers the keys they give.
  - The user's crontab, C(at) jobs, systemd linger flag and C(sudo) timestamp records are reported. With
    O(persistence=disable) the crontab, C(at) jobs and linger flag are set aside. C(sudo) timestamps are always
    cleared.
  - With O(state=absent) the lockout is lifted exactly, matched by name - key files come back byte-identical with
    owner, mode and extended attributes, the previous expiry returns (including "never"), what was set aside
    returns, the deny entry goes. A lockout that was never applied is a no-op. When the user's keys or expiry
    changed since the lockout, that user is refused and the difference shown, unless O(force=true).
  - The deny entry, sshd's PAM line and the drop-in are changed under one lock, so concurrent runs on a host never
    lose or duplicate an entry. The PAM line and the drop-in go when the last lockout is lifted.
  - State, the quarantine and the deny list live in C(/var/lib/sessionguard) (root only, mode 0700).
author:
  - sessionguard maintainers (@sessionguard)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - sessionguard.mosh._target
attributes:
  check_mode:
    support: full
    details:
      - Reports what would change and changes nothing.
  diff_mode:
    support: full
    details:
      - Shows the deny list, sshd's PAM file and drop-in, the expiry and the key files as they are and would be.
  platform:
    platforms: linux
options:
  users:
    description:
      - The users to lock out or let in again, as names or numeric UIDs.
      - Names follow the rules of M(sessionguard.mosh.revoke_sessions). A name that does not resolve on the host is
        still put on the deny list (the directory may hand it out later) and reported in RV(absent_users).
    type: list
    elements: raw
    required: true
  state:
    description: V(present) locks the users out; V(absent) lifts the lockout.
    type: str
    choices: [present, absent]
    default: present
  reason:
    description: Why; kept with the lockout on the host and shown by M(sessionguard.mosh.session_facts).
    type: str
  persistence:
    description:
      - V(report) reports the user's crontab, C(at) jobs and linger flag; V(disable) also sets them aside (restored
        byte-identical with O(state=absent)).
    type: str
    choices: [report, disable]
    default: report
  force:
    description:
      - With O(state=absent), lift the lockout even when the user's keys or expiry changed since; whatever is in the
        way is kept aside in the quarantine and named in the result, never deleted.
    type: bool
    default: false
  allow_system_users:
    description: Allow root and users whose UID is below C(UID_MIN) from C(/etc/login.defs).
    type: bool
    default: false
  protected_users:
    description:
      - Users never locked out (break-glass administrators, the Ansible connection and become users); naming one in
        O(users) fails before anything changes.
      - The user who logged in to run this task (its audit loginuid, and C(SUDO_UID)) is always protected.
    type: list
    elements: raw
    default: []
  sshd_config:
    description:
      - sshd's main configuration file. The drop-in goes in the C(sshd_config.d) directory next to it.
    type: path
    default: /etc/ssh/sshd_config
seealso:
  - module: sessionguard.mosh.revoke_sessions
  - module: sessionguard.mosh.session_facts
"""

EXAMPLES = r"""
---
- name: Lock bob out before ending his sessions
  sessionguard.mosh.lockout:
    users: [bob]
    reason: offboarding ticket SEC-1234
    protected_users: "{{ [ansible_user] + sessionguard_protected_users | default([]) }}"
  become: true

- name: Also set aside his crontab, at jobs and linger flag
  sessionguard.mosh.lockout:
    users: [bob]
    persistence: disable
  become: true

- name: Let him in again, exactly as before
  sessionguard.mosh.lockout:
    users: [bob]
    state: absent
  become: true
"""

RETURN = r"""
users:
  description: Per user named, what was done.
  returned: always
  type: list
  elements: dict
  contains:
    user:
      description: The name, or null for a UID with no account.
      type: str
    uid:
      description: The UID, or null for a name that does not resolve here.
      type: int
    found:
      description: Whether the user exists on this host.
      type: bool
    closed:
      description: What this run closed (O(state=present)).
      type: list
      elements: str
      sample: [deny list, sshd DenyUsers, account expiry (was never), key file /home/bob/.ssh/authorized_keys moved to the quarantine]
    already_closed:
      description: What was closed already.
      type: list
      elements: str
    open:
      description: What could not be closed; the task fails when this is not empty.
      type: list
      elements: str
    notes:
      description: Facts worth knowing (a name DenyUsers cannot express, a shared key file, an AuthorizedKeysCommand).
      type: list
      elements: str
    persistence:
      description: What could bring the user's code back (O(state=present)).
      type: dict
      sample: {crontab: true, crontab_lines: 1, at_jobs: [a0000b01c2d3e4], at_job_count: 1, linger: false, sudo_timestamps: false}
    restored:
      description: What this run put back (O(state=absent)).
      type: list
      elements: str
    refused:
      description: Why lifting this user's lockout was refused (O(state=absent)); nothing of theirs was changed.
      type: list
      elements: str
    kept_aside:
      description: With O(force=true), what was in the way and where it was kept.
      type: list
      elements: str
absent_users:
  description: Names in O(users) with no account on this host.
  returned: always
  type: list
  elements: str
pam:
  description: The PAM deny entry; V(present) whether sshd's PAM file has it.
  returned: always
  type: dict
  sample: {file: /etc/pam.d/sshd, deny_file: /var/lib/sessionguard/deny, present: true, changed: true}
sshd:
  description:
    - The drop-in, whether it changed and sshd was reloaded, whether sshd uses PAM, and the key sources in use
      (C(AuthorizedKeysCommand), C(TrustedUserCAKeys), principals).
  returned: always
  type: dict
  sample: {config: /etc/ssh/sshd_config, dropin: /etc/ssh/sshd_config.d/sessionguard-lockout.conf, dropin_changed: true,
           reloaded: true, detail: sshd (pid 812) reloaded, use_pam: true, key_sources: {}}
errors:
  description: What failed on the host (a configuration that does not validate, a reload that failed).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sessionguard.mosh.plugins.module_utils._lockout import PERSISTENCE, SSHD_DIRS, refusal, run_lockout
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import UserError, resolve


def main():
    module = AnsibleModule(
        argument_spec=dict(
            users=dict(type='list', elements='raw', required=True),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            reason=dict(type='str'),
            persistence=dict(type='str', choices=list(PERSISTENCE), default='report'),
            force=dict(type='bool', default=False),
            allow_system_users=dict(type='bool', default=False),
            protected_users=dict(type='list', elements='raw', default=[]),
            sshd_config=dict(type='path', default='/etc/ssh/sshd_config'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        targets, absent = resolve(p['users'], allow_system_users=p['allow_system_users'] or p['state'] == 'absent')
    except UserError as e:
        module.fail_json(msg=str(e))
    sshd_bin = module.get_bin_path('sshd', opt_dirs=SSHD_DIRS)
    why = refusal(targets, absent, p['protected_users'], sshd_bin, state=p['state'])
    if why:
        module.fail_json(msg=why)
    result, problems = run_lockout(module.run_command, sshd_bin, p['sshd_config'], targets, absent, state=p['state'],
                                   reason=p['reason'], persistence=p['persistence'], force=p['force'],
                                   check_mode=module.check_mode, diff=module._diff)
    if problems:
        module.fail_json(msg='; '.join(problems), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

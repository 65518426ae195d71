#!/usr/bin/python
# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: revoke_sessions
short_description: End a user's mosh sessions, and everything tied to them, on a host
description:
  - Finds every mosh-server of the given users, by what it is rather than by its name, and ends it together with
    everything tied to its session - descendants, processes of the same pty session, and every process carrying
    the same kernel audit session id or logind session - so C(nohup), C(setsid), double-forked and C(tmux)
    escapees go too.
  - With O(scope=interactive) the users' SSH logins go as well; with O(scope=all) every process of the users.
  - The set is snapshotted and frozen (C(SIGSTOP)) so nothing forks or reparents, then sent C(SIGTERM), so mosh
    clients get mosh's clean shutdown and print C([mosh is exiting.]). What is left after O(grace_period) gets
    C(SIGKILL). The host is then scanned again until nothing tied to the revocation remains.
  - Processes are addressed by pidfd (Linux 5.3 and newer) or by PID and start time, so a reused PID is never
    signalled.
  - The module's own process and its ancestors (the Ansible connection, which may belong to the revoked user) are
    never signalled; they are listed in RV(spared).
  - This module does not revoke credentials. Revoke them first, or the user can reconnect in the gap.
author:
  - sessionguard maintainers (@sessionguard)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - sessionguard.mosh._target
attributes:
  check_mode:
    support: full
    details:
      - Reports exactly what would be signalled and signals nothing.
  diff_mode:
    support: none
  platform:
    platforms: linux
options:
  users:
    description:
      - The users whose sessions end, as names or numeric UIDs.
      - A numeric UID works for a user already removed from the account database whose processes still run.
      - A name with no account on this host is reported in RV(absent_users); it is not an error, fleets differ.
    type: list
    elements: raw
    required: true
  scope:
    description:
      - V(mosh) ends every mosh session of the users and everything tied to those sessions.
      - V(interactive) also ends the users' SSH logins (per-connection C(sshd) or C(sshd-session) processes) and
        everything tied to them.
      - V(all) ends every process of the users on the host.
    type: str
    choices: [mosh, interactive, all]
    default: mosh
  grace_period:
    description:
      - Seconds between the graceful C(SIGTERM) and C(SIGKILL) for what is still running.
      - V(0) sends C(SIGKILL) right after C(SIGTERM). mosh-server needs up to about 4 seconds to tell its client.
    type: float
    default: 5
  notice:
    description:
      - Text written to each session's terminal before it ends, as C(write) or C(wall) would; mosh clients show it
        before they close.
      - Control characters are removed.
      - Named C(notice) because ansible-core reserves C(message) as a module option.
    type: str
  allow_system_users:
    description:
      - Allow root and users whose UID is below C(UID_MIN) from C(/etc/login.defs).
    type: bool
    default: false
  kill_other_uids:
    description:
      - Also end processes of other users that carry a revoked session's audit session id, such as a C(sudo -i)
        root shell opened inside the session.
      - When V(false) they are listed in RV(other_uid_processes) and left running.
    type: bool
    default: false
seealso:
  - module: sessionguard.mosh.session_facts
"""

EXAMPLES = r"""
---
- name: End every mosh session of bob and what he left running in them
  sessionguard.mosh.revoke_sessions:
    users: [bob]
  become: true

- name: Preview an offboarding without signalling anything
  sessionguard.mosh.revoke_sessions:
    users: [bob, 1234]
    scope: all
  check_mode: true
  become: true
  register: preview

- name: Show what would end
  ansible.builtin.debug:
    msg: "{{ preview.sessions | map(attribute='leader_pid') | list }}"

- name: Cut off a user with a warning on their terminals
  sessionguard.mosh.revoke_sessions:
    users: [mallory]
    scope: interactive
    grace_period: 2
    notice: Your access has been revoked by the security team.
  become: true
"""

RETURN = r"""
sessions:
  description: The sessions ended (or, in check mode, that would end), one entry per session.
  returned: always
  type: list
  elements: dict
  contains:
    user:
      description: User name, or null for a UID with no account.
      type: str
      sample: bob
    uid:
      description: Numeric user id.
      type: int
      sample: 1001
    kind:
      description: V(mosh), V(ssh), or V(other) for processes tied to no login (O(scope=all)).
      type: str
      sample: mosh
    leader_pid:
      description: PID of the mosh-server or the per-connection sshd; null for V(other).
      type: int
      sample: 4242
    client_address:
      description: Client IP. For mosh it comes from utmp and is a hint only; see RV(sessions[].client_address_source).
      type: str
      sample: 192.0.2.10
    client_address_source:
      description: Where RV(sessions[].client_address) came from, V(utmp), V(wtmp) or V(socket).
      type: str
      sample: utmp
    tty:
      description: The session's terminal.
      type: str
      sample: pts/3
    started:
      description: Start time of the leader, ISO 8601 UTC.
      type: str
      sample: "2026-11-28T04:31:07Z"
    processes:
      description: The processes ended, each with the signal that ended it (null in check mode).
      type: list
      elements: dict
      sample:
        - {pid: 4242, uid: 1001, user: bob, cmdline: "mosh-server new -c 256 -s -l LANG=C.UTF-8", signal: SIGTERM}
        - {pid: 4250, uid: 1001, user: bob, cmdline: "sleep 1000", signal: SIGKILL}
survivors:
  description: Processes still running after the revocation. Empty on success; the module fails otherwise.
  returned: always
  type: list
  elements: dict
  sample: []
absent_users:
  description: Users named in O(users) that do not exist on this host.
  returned: always
  type: list
  elements: str
  sample: [carol]
spared:
  description:
    - Processes that would have been ended but run this task (the module, its ancestors, the Ansible connection).
    - They are left running; the connection closes when the task ends.
  returned: always
  type: list
  elements: dict
  sample: [{pid: 3001, uid: 1001, user: ops, cmdline: "sshd: ops@notty", reason: runs this task (the Ansible connection or its ancestors)}]
other_uid_processes:
  description: Processes of other users tied to the sessions, left running because O(kill_other_uids=false).
  returned: always
  type: list
  elements: dict
  sample: [{pid: 5120, uid: 0, user: root, cmdline: "-bash"}]
notice_sent_to:
  description: Terminals the O(notice) was written to.
  returned: always
  type: list
  elements: str
  sample: [pts/3]
errors:
  description: Signals that could not be sent, with the PID and the reason; such processes also appear in RV(survivors).
  returned: when something was signalled
  type: list
  elements: str
  sample: []
process_reader:
  description: How processes were read on the host, V(psutil) or V(procfs).
  returned: always
  type: str
  sample: procfs
pidfd:
  description: Whether processes were addressed by pidfd.
  returned: always
  type: bool
  sample: true
scope:
  description: The scope used.
  returned: always
  type: str
  sample: mosh
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sessionguard.mosh.plugins.module_utils._revoke import SCOPES, revoke
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import UserError, resolve


def main():
    module = AnsibleModule(
        argument_spec=dict(
            users=dict(type='list', elements='raw', required=True),
            scope=dict(type='str', choices=list(SCOPES), default='mosh'),
            grace_period=dict(type='float', default=5),
            notice=dict(type='str'),
            allow_system_users=dict(type='bool', default=False),
            kill_other_uids=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['grace_period'] < 0:
        module.fail_json(msg='grace_period must be 0 or more seconds; got %s.' % p['grace_period'])
    try:
        targets, absent = resolve(p['users'], allow_system_users=p['allow_system_users'])
    except UserError as e:
        module.fail_json(msg=str(e))

    others = [t.label for t in targets if t.uid != os.geteuid()]
    if os.geteuid() != 0 and others:
        module.fail_json(msg='revoke_sessions must run as root (become: true) to end sessions of other users: %s'
                         % ', '.join(others))

    result = revoke(targets, scope=p['scope'], grace_period=p['grace_period'], notice=p['notice'],
                    check_mode=module.check_mode, kill_other_uids=p['kill_other_uids'])
    result['absent_users'] = absent + result['absent_users']
    result['changed'] = any(s['processes'] for s in result['sessions'])
    if result['spared']:
        module.warn('%d process(es) of the revoked sessions run this task and were left running: %s'
                    % (len(result['spared']), ', '.join(str(e['pid']) for e in result['spared'])))
    if result['survivors']:
        module.fail_json(msg='%d process(es) survived revocation: %s' % (
            len(result['survivors']), ', '.join(str(e['pid']) for e in result['survivors'])), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

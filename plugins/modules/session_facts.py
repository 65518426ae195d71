#!/usr/bin/python
# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: session_facts
short_description: Audit live mosh (and SSH) sessions on a host as facts
version_added: 1.0.0
description:
  - Sets C(ansible_facts['sessionguard_sessions']), a list of the live mosh sessions on the host - who, since when,
    on which UDP port, in what state, from which client address, launched from which SSH connection, and what is
    tied to each session.
  - Renamed, copied and deleted mosh-server binaries are found and flagged. A binary that cannot be read within
    3 seconds (a hung NFS or FUSE mount) does not stall the audit; the process is judged on what could be read and
    flagged C(exe_unreadable).
  - Every string read from the host (command lines, utmp host text) is attacker input. Invalid UTF-8, control
    characters and bidi overrides come back as visible escapes (C(\xe9), C(\x1b), C(\u202e)), never raw.
  - With O(include_ssh=true) SSH logins are listed too.
  - Sets C(ansible_facts['sessionguard_orphans']), per user the processes tied to no live login, such as a
    C(nohup) job whose session is gone.
  - Sets C(ansible_facts['sessionguard_lockouts']), the users locked out on the host by
    M(sessionguard.mosh.lockout), so an audit shows who is shut out where.
author:
  - sessionguard maintainers (@sessionguard)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
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
  facts:
    support: full
  platform:
    platforms: linux
options:
  users:
    description:
      - Only report sessions and orphans of these users, as names or numeric UIDs.
      - When omitted, every user's sessions are reported, and orphans of users with a UID of at least C(UID_MIN).
    type: list
    elements: raw
  include_ssh:
    description:
      - Also report SSH logins (per-connection C(sshd) or C(sshd-session) processes).
    type: bool
    default: false
  history_days:
    description:
      - Also read the host's wtmp for the mosh and SSH logins of the last this many days, ended or not, into
        C(ansible_facts['sessionguard_history']). V(0) reads no history.
      - wtmp is rotated (monthly on Debian), so the history covers at most what the current file holds;
        RV(ansible_facts.sessionguard_history.covers_from) says from when.
    type: int
    default: 0
    version_added: 1.1.0
notes:
  - O(users) entries that do not exist on the host are ignored; fleets differ.
seealso:
  - module: sessionguard.mosh.revoke_sessions
"""

EXAMPLES = r"""
---
- name: Audit mosh sessions
  sessionguard.mosh.session_facts:
  become: true

- name: List who is attached and from where
  ansible.builtin.debug:
    msg: "{{ item.user }} {{ item.state }} {{ item.client_ip | default('unknown', true) }}"
  loop: "{{ ansible_facts['sessionguard_sessions'] }}"

- name: Audit bob's mosh and SSH sessions
  sessionguard.mosh.session_facts:
    users: [bob]
    include_ssh: true
  become: true

- name: Fail when a renamed or copied mosh-server runs
  ansible.builtin.assert:
    that: ansible_facts['sessionguard_sessions'] | selectattr('suspicious', 'defined') | selectattr('suspicious') | list | length == 0
"""

RETURN = r"""
ansible_facts:
  description: Facts about live sessions.
  returned: always
  type: dict
  contains:
    sessionguard_sessions:
      description:
        - One entry per live session. Mosh sessions have C(kind=mosh); with O(include_ssh=true) SSH logins
          follow with C(kind=ssh) and only the common keys plus C(client_ip) and C(client_port).
      returned: always
      type: list
      elements: dict
      sample:
        - kind: mosh
          user: bob
          uid: 1001
          leader_pid: 4242
          server_pid: 4242
          exe: /usr/bin/mosh-server
          exe_deleted: false
          renamed: false
          copied: false
          exe_unreadable: false
          identified_by: signature
          suspicious: false
          cmdline: mosh-server new -c 256 -s -l LANG=C.UTF-8
          started: "2026-11-28T04:31:07Z"
          age_seconds: 512
          udp_port: 60001
          bind_address: 192.0.2.1
          tty: pts/3
          state: attached
          state_source: utmp
          detached_seconds: null
          client_ip: 198.51.100.7
          client_ip_source: utmp
          client_ip_note: written to utmp by mosh-server; the user can influence it, so it is a hint, not proof
          ssh_connection: {client_ip: 198.51.100.7, client_port: 50122, server_ip: 192.0.2.1, server_port: 22}
          audit_session: 17
          logind_session: null
          process_count: 3
          processes: [{pid: 4243, uid: 1001, user: bob, cmdline: "-bash"}]
          processes_truncated: false
      contains:
        kind:
          description: V(mosh) or V(ssh).
          type: str
        user:
          description: User name; null for a UID with no account.
          type: str
        uid:
          description: Numeric user id.
          type: int
        leader_pid:
          description: PID of the mosh-server daemon, or of the per-connection sshd for SSH logins.
          type: int
        server_pid:
          description: PID of the mosh-server daemon (mosh only).
          type: int
        exe:
          description: Path of the server's executable (mosh only).
          type: str
        exe_deleted:
          description: The executable was deleted after the server started (mosh only).
          type: bool
        renamed:
          description: The process name or argv[0] is not C(mosh-server) (mosh only).
          type: bool
        copied:
          description: The executable is not the installed mosh-server (mosh only).
          type: bool
        exe_unreadable:
          description: The server's binary could not be read in time (a hung NFS or FUSE mount) (mosh only).
          type: bool
        identified_by:
          description:
            - How the server was recognised (mosh only). Every process of a user that holds a UDP socket and a pty
              master is a remote-terminal server.
            - V(signature) (its binary is a mosh-server), V(name) (its binary could not be opened; its name says
              C(mosh-server)), V(unreadable) (its binary did not answer), or V(behaviour) (another binary, such as
              ld.so or a patched copy).
          type: str
        suspicious:
          description: Any of C(renamed), C(copied), C(exe_deleted), C(exe_unreadable) (mosh only).
          type: bool
        started:
          description: Start time, ISO 8601 UTC.
          type: str
        age_seconds:
          description: Seconds since start.
          type: int
        udp_port:
          description: UDP port the server listens on (mosh only).
          type: int
        bind_address:
          description: Address the UDP socket is bound to (mosh only).
          type: str
        tty:
          description: The session's terminal.
          type: str
        state:
          description:
            - V(connecting) before a client reached the server, V(attached), V(detached) (no client packet for 30 s),
              V(shell_exited), or V(unknown) where utmp has no record (mosh only).
          type: str
        state_source:
          description: What the state was derived from, V(process) or V(utmp) (mosh only).
          type: str
        detached_seconds:
          description: Seconds since the last client contact, when V(detached) and derivable (mosh only).
          type: int
        client_ip:
          description: Last known client IP. For mosh from utmp or wtmp (a hint); for SSH from the socket.
          type: str
        client_ip_source:
          description: V(utmp) or V(wtmp) (mosh only).
          type: str
        client_ip_note:
          description: Why a mosh client IP is only a hint (mosh only).
          type: str
        client_port:
          description: Client TCP port (SSH only).
          type: int
        ssh_connection:
          description:
            - The SSH connection the server was launched from (C(SSH_CONNECTION) at launch; mosh only).
            - The user can set that variable; it is a hint, see RV(ansible_facts.sessionguard_sessions[].ssh_connection_note).
          type: dict
        ssh_connection_note:
          description: Why RV(ansible_facts.sessionguard_sessions[].ssh_connection) is only a hint (mosh only).
          type: str
        audit_session:
          description: Kernel audit session id of the login, or null where unset.
          type: int
        logind_session:
          description: logind session id from the cgroup, or null.
          type: str
        process_count:
          description: Number of processes tied to the session, leader excluded.
          type: int
        processes:
          description: Up to 20 of those processes, with pid, uid, user and command line.
          type: list
          elements: dict
        processes_truncated:
          description: More processes were tied than listed.
          type: bool
    sessionguard_nameless_uids:
      description: UIDs with no account that still run processes (a user removed with C(userdel -f)), with a count.
      returned: always
      type: list
      elements: dict
      sample: [{uid: 1042, count: 3}]
    sessionguard_lockouts:
      description:
        - The users locked out on this host by M(sessionguard.mosh.lockout) (all of them, whatever O(users) says),
          with when, why, how many files are kept in the quarantine and whether their expiry was changed.
        - Empty when the module runs without root (the lockout state is root-only).
      returned: always
      type: list
      elements: dict
      sample: [{user: bob, uid: 1001, locked_at: "2026-11-28T04:31:07Z", reason: offboarding, kept: 2, expiry_changed: true}]
    sessionguard_history:
      description:
        - With O(history_days) above 0, the mosh and SSH logins recorded in wtmp during those days, newest first,
          with O(users) applied. A login is paired with its logout as C(last) pairs them; the records of one
          mosh-server (it rewrites its record each time a client attaches or goes quiet) make one login.
        - mosh records are written by the user's own mosh-server through the utempter helper, so their client
          addresses are hints; SSH records are written by sshd.
      returned: when O(history_days) is above 0
      type: dict
      version_added: 1.1.0
      sample:
        wtmp: /var/log/wtmp
        since: "2026-11-21T04:31:07Z"
        covers_from: "2026-11-01T00:00:12Z"
        logins_total: 1
        logins_truncated: false
        error: null
        logins:
          - {kind: mosh, user: bob, client_ip: 198.51.100.7, client_ips: [198.51.100.7], tty: pts/3, pid: 4242,
             start: "2026-11-28T04:31:07Z", end: "2026-11-28T05:01:07Z", duration_seconds: 1800, ended_by: logout}
      contains:
        wtmp:
          description: The file read, or null when there is none.
          type: str
        since:
          description: Start of the window asked for, ISO 8601 UTC.
          type: str
        covers_from:
          description: Time of the oldest record read; nothing older is known from this host (wtmp is rotated).
          type: str
        logins:
          description:
            - Up to 500 logins, newest first. C(kind) (V(mosh) or V(ssh)), C(user), C(client_ip) (the first one
              seen), C(client_ips), C(tty), C(pid), C(start), C(end) (null while no logout is recorded),
              C(duration_seconds) (up to now while open), C(ended_by) (V(logout), V(reboot), V(unknown) or null
              while open).
          type: list
          elements: dict
        logins_total:
          description: Number of logins in the window, listed or not.
          type: int
        logins_truncated:
          description: More logins than listed.
          type: bool
        error:
          description: Why the history could not be read, or null.
          type: str
    sessionguard_orphans:
      description: Per user, live processes tied to no live login.
      returned: always
      type: list
      elements: dict
      sample:
        - {user: bob, uid: 1001, process_count: 1, processes: [{pid: 5003, uid: 1001, user: bob, cmdline: "sleep 1000"}],
           processes_truncated: false}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sessionguard.mosh.plugins.module_utils._audit import audit
from ansible_collections.sessionguard.mosh.plugins.module_utils._lockout import Layout, locked_out
from ansible_collections.sessionguard.mosh.plugins.module_utils._users import UserError, resolve
from ansible_collections.sessionguard.mosh.plugins.module_utils._utmp import history


def main():
    module = AnsibleModule(
        argument_spec=dict(
            users=dict(type='list', elements='raw'),
            include_ssh=dict(type='bool', default=False),
            history_days=dict(type='int', default=0),
        ),
        supports_check_mode=True,
    )
    if module.params['history_days'] < 0:
        module.fail_json(msg='history_days must be 0 or more; got %d.' % module.params['history_days'])
    uids = None
    names = None
    if module.params['users'] is not None:
        try:
            # Auditing is read-only, so system users may be named.
            targets, _absent = resolve(module.params['users'], allow_system_users=True)
        except UserError as e:
            module.fail_json(msg=str(e))
        uids = [t.uid for t in targets]
        names = set(t.name for t in targets if t.name is not None)
    if os.geteuid() != 0:
        module.warn('session_facts runs without root: other users\' sessions are invisible; use become: true')
    found = audit(uids=uids, include_ssh=module.params['include_ssh'])
    for entry in found['unreadable']:
        module.warn('pid %d was judged without its binary: %s' % (entry['pid'], entry['reason']))
    for err in found['utmp_errors']:
        module.warn('could not read %s; client addresses and attach state may be missing' % err)
    facts = {
        'sessionguard_sessions': found['sessions'],
        'sessionguard_orphans': found['orphans'],
        'sessionguard_nameless_uids': found['nameless_uids'],
        'sessionguard_lockouts': locked_out(Layout()),
    }
    if module.params['history_days'] > 0:
        facts['sessionguard_history'] = history(module.params['history_days'], users=names)
        if facts['sessionguard_history']['error']:
            module.warn('no login history: %s' % facts['sessionguard_history']['error'])
    module.exit_json(changed=False, ansible_facts=facts)


if __name__ == '__main__':
    main()

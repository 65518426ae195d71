#!/usr/bin/python
# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: revoke_sessions
short_description: End a user's mosh sessions, and everything tied to them, on a host
version_added: 1.0.0
description:
  - Finds every mosh-server of the given users, by what it is rather than by its name, and ends it together with
    everything tied to its session - descendants, processes of the same pty session, and every process carrying
    the same kernel audit session id or logind session - so C(nohup), C(setsid), double-forked and C(tmux)
    escapees go too.
  - With O(scope=interactive) the users' SSH logins go as well; with O(scope=all) every process of the users.
  - The set is snapshotted and frozen so nothing forks, reparents or runs while the module works. Where cgroup v2
    is writable the processes are moved into frozen groups of the module's own (C(cgroup.freeze)); a frozen task is
    not job-control stopped, so no parent (C(sudo), a shell) reacts to it and no C(SIGCONT) wakes it. Elsewhere
    they get C(SIGSTOP). See RV(freezer).
  - While frozen, the O(notice) is written to the sessions' terminals and only the mosh-servers are thawed to carry
    it to their clients. Then the mosh-servers get C(SIGTERM), so their clients get mosh's clean shutdown and
    print C([mosh is exiting.]); a server still running after O(grace_period) gets C(SIGKILL). Everything else,
    still frozen, is then killed (C(SIGKILL), and C(cgroup.kill) for anything born inside the group). The servers
    go first because a mosh-server whose shell dies under it quits on a C(SIGTERM) without telling its client.
  - Anything tied to the revocation that appears later (a process that keeps forking new PIDs) is frozen and
    killed on sight for up to 10 seconds. The verdict comes from a last, fresh scan of the host; the task fails if
    anything tied is still alive, and names it in RV(survivors).
  - If anything fails after the freeze, or the module is sent C(SIGTERM), C(SIGHUP) or C(SIGINT), the job is still
    finished - everything planned to end is killed and whatever else was stopped is thawed - and the task fails
    with RV(aborted). A watchdog process outside the module's process group does the same if the module is
    killed outright (an C(async) timeout).
  - Processes are addressed by pidfd (Linux 5.3 and newer) or by PID and start time, so a reused PID is never
    signalled. A process that cannot be read is never taken for gone.
  - Every string read from the host is attacker input. Invalid UTF-8, control characters and bidi overrides are
    returned as visible escapes (C(\xe9), C(\x1b), C(\u202e)), never raw and never stripped. Every list
    in the result is bounded; counts account for every process.
  - A user's binary that cannot be read in 3 seconds (a hung NFS or FUSE mount) does not stall the module; the
    process is judged on what could be read, flagged in RV(unreadable), and ended with the rest.
  - The module's own process and its ancestors (the Ansible connection, which may belong to the revoked user) are
    never signalled; they are listed in RV(spared).
  - This module does not revoke credentials. Revoke them first, or the user can reconnect in the gap. With
    O(lockout) the same run first closes the door on the host, exactly as M(sessionguard.mosh.lockout) with
    O(sessionguard.mosh.lockout#module:state=present) does, and then ends the sessions - one module run per host.
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
    support: partial
    details:
      - With O(lockout), shows the lockout's changes as M(sessionguard.mosh.lockout) does; the processes ended are
        in the result, not in the diff.
  platform:
    platforms: linux
options:
  users:
    description:
      - The users whose sessions end, as names or numeric UIDs.
      - A numeric UID works for a user already removed from the account database whose processes still run.
      - A name with no account on this host is reported in RV(absent_users); it is not an error, fleets differ.
      - A name that the host resolves (through NSS - C(/etc/passwd), SSSD, LDAP) is taken as spelled, so directory
        names such as C(Bob.Smith@corp.example) work. A name that resolves nowhere must be letters, digits, C(_),
        C(.) and C(-), start with a letter or C(_), and be at most 32 characters long. A numeric UID is ASCII digits
        only. Whitespace, control characters, C(:), C(/), template markers, booleans and numbers with a fraction are
        always refused, naming the value.
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
      - Must be finite and not negative.
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
      - Root with O(scope=all) is refused even then; it would end every daemon of the host.
    type: bool
    default: false
  terminate_gracefully:
    description:
      - Send C(SIGTERM) to every process of the set and give all of them O(grace_period) before C(SIGKILL).
      - By default only the mosh-servers get C(SIGTERM) (so their clients close cleanly); everything else is
        killed while frozen, so that nothing of the session runs after the warning.
    type: bool
    default: false
  kill_other_uids:
    description:
      - Also end processes of other users that a revoked user's login started, and only those - processes that
        carry a revoked session's audit session id (a C(sudo -i) root shell opened inside it), and processes whose
        loginuid is a revoked user's (C(sudo -u svc job &) from any of their logins). Being a child or a
        session-mate of such a process is not enough, and per-connection sshd processes are left to O(scope).
      - When V(false) they are listed in RV(other_uid_processes) and left running. Processes with a revoked
        user's loginuid are listed in every scope.
    type: bool
    default: false
  run_id:
    description:
      - The revocation's id, the same in the controller's revocation log, the snapshot file and the host's syslog
        lines. The C(sessionguard.mosh.revoke) role passes one id to every host of a run.
      - 1 to 128 letters, digits, C(.), C(_), C(:) or C(-), starting with a letter or digit; it names the snapshot
        file. Generated (C(sg-TIME-RANDOM)) when not given.
    type: str
  reason:
    description:
      - Why the users are revoked (free text or a ticket id), written to the host's syslog line per ended session and
        into the snapshot.
    type: str
  syslog:
    description:
      - Write one line per ended session to the host's syslog (through C(/dev/log), facility C(auth), tag
        C(sessionguard)) with the run id, user, client address, leader PID, signal and reason. Not in check mode.
    type: bool
    default: true
  evidence:
    description:
      - Take a forensic snapshot of every process to be ended, while the whole set is frozen and before any signal,
        and store it on the host in O(evidence_dir) as C(RUN_ID.json). See RV(evidence).
      - Per process it records PID, parent, UIDs, start time, command line, working directory, terminal, session and
        audit labels, cgroup, the executable's path, whether it is deleted and the SHA-256 of its content (read through
        C(/proc/PID/exe), so a deleted binary is hashed too), its TCP and UDP sockets with addresses and state, and
        up to 64 open files. Also the session tree and the utmp records (the client-address view).
      - The snapshot never stops or delays the kill beyond O(evidence_timeout). An unusable directory, a failure while
        collecting, a hung file system or the budget running out are reported in RV(evidence.reason), and the
        revocation goes on.
    type: bool
    default: false
  evidence_dir:
    description:
      - Where snapshots are kept on the host. Created root-only (mode C(0700)) when missing; must belong to the user
        the module runs as.
    type: path
    default: /var/lib/sessionguard/evidence
  evidence_timeout:
    description:
      - Seconds the snapshot may take while the set is frozen. What was read by then is kept, marked incomplete.
      - Writing the file after the kill gets the same time again.
    type: float
    default: 5
  evidence_environ:
    description:
      - Also record each process's environment (up to 64 KiB each). Off by default, because environments hold
        secrets (tokens, passwords).
    type: bool
    default: false
  evidence_keep_days:
    description:
      - Snapshots in O(evidence_dir) older than this many days are deleted when a new one is written. V(0) keeps them
        all.
    type: int
    default: 90
  lockout:
    description:
      - Lock the users out of the host before their sessions end, in this same run, exactly as
        M(sessionguard.mosh.lockout) with O(sessionguard.mosh.lockout#module:state=present) does, with O(reason) and
        O(allow_system_users). Not given, nothing is locked out. Give V({}) for the defaults.
      - A protected user, a task not run as root, or a host without sshd fails before anything changes.
      - A lockout that fails part-way (a configuration that does not validate, a door still open, an error) does not
        stop the kill; the sessions still end, and the task fails at the end naming the lockout's problems with any
        survivors. See RV(lockout).
      - Lift the lockout with M(sessionguard.mosh.lockout) and O(sessionguard.mosh.lockout#module:state=absent).
    type: dict
    suboptions:
      persistence:
        description: As O(sessionguard.mosh.lockout#module:persistence).
        type: str
        choices: [report, disable]
        default: report
      protected_users:
        description:
          - Users never locked out; naming one in O(users) fails before anything changes, as
            O(sessionguard.mosh.lockout#module:protected_users).
          - The user who logged in to run this task (its audit loginuid, and C(SUDO_UID)) is always protected.
        type: list
        elements: raw
        default: []
      sshd_config:
        description: sshd's main configuration file; the drop-in goes in the C(sshd_config.d) directory next to it.
        type: path
        default: /etc/ssh/sshd_config
seealso:
  - module: sessionguard.mosh.lockout
  - module: sessionguard.mosh.session_facts
  - module: sessionguard.mosh.revocation_log
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

- name: Lock bob out and end everything he runs, in one run on the host
  sessionguard.mosh.revoke_sessions:
    users: [bob]
    scope: all
    reason: offboarding ticket SEC-1234
    lockout:
      protected_users: "{{ [ansible_user] }}"
  become: true

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
      description:
        - V(mosh), V(ssh), V(other) for processes tied to no login (O(scope=all)), or V(loginuid) for other users'
          processes started by the user's logins (ended only with O(kill_other_uids=true)).
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
    identified_by:
      description: For mosh, how the server was recognised, V(signature), V(name), V(unreadable) or V(behaviour).
      type: str
      sample: signature
    started:
      description: Start time of the leader, ISO 8601 UTC.
      type: str
      sample: "2026-11-28T04:31:07Z"
    process_count:
      description: How many processes of the session were ended (or would be, in check mode).
      type: int
      sample: 2
    signals:
      description: How many of them ended by each signal (V(none) in check mode, V(exited) when they left on their own).
      type: dict
      sample: {SIGTERM: 1, SIGKILL: 1}
    processes:
      description:
        - Up to 10 of the processes ended, the leader first, each with the signal that ended it (null in check mode).
        - Command lines are cut to 160 characters and escaped.
      type: list
      elements: dict
      sample:
        - {pid: 4242, uid: 1001, user: bob, cmdline: "mosh-server new -c 256 -s -l LANG=C.UTF-8", signal: SIGTERM}
        - {pid: 4250, uid: 1001, user: bob, cmdline: "sleep 1000", signal: SIGKILL}
    processes_truncated:
      description: More processes were ended than listed; RV(sessions[].process_count) counts them all.
      type: bool
      sample: false
sessions_truncated:
  description: More than 30 sessions were ended; RV(totals) counts them all.
  returned: always
  type: bool
  sample: false
totals:
  description: Every session and process ended (or that would end), and how many ended by each signal.
  returned: always
  type: dict
  sample: {sessions: 1, processes: 2, signals: {SIGTERM: 1, SIGKILL: 1}}
survivors:
  description: Up to 20 processes still tied to the revocation in the last scan. Empty on success; the module fails otherwise.
  returned: always
  type: list
  elements: dict
  sample: []
survivor_count:
  description: How many processes survived.
  returned: when something was signalled
  type: int
  sample: 0
aborted:
  description:
    - Present when the run failed after the freeze (an error, or a signal to the module). The job was finished
      anyway - everything planned to end was killed and nothing was left stopped - and the task fails.
    - V(stage) is where it failed, V(error) the error; V(killed) and V(thawed) list up to 20 PIDs each, and
      V(killed_count) and V(thawed_count) count them all.
  returned: on failure after the freeze
  type: dict
  sample: {stage: chase, error: "OSError: [Errno 24] Too many open files", killed: [4250, 4251], thawed: [],
           killed_count: 2, thawed_count: 0}
freezer:
  description: How the set was held still, V(cgroup) (cgroup v2 freeze) or V(sigstop).
  returned: when something was signalled
  type: str
  sample: cgroup
unreadable:
  description: Processes whose binary could not be read in time (a hung NFS or FUSE mount), judged without it.
  returned: always
  type: list
  elements: dict
  sample: [{pid: 5300, reason: "its binary /mnt/fuse/x did not answer: no answer within 3 s"}]
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
foreign_processes:
  description:
    - Up to 20 processes running under a revoked user's UID in another PID namespace that nothing ties to the user
      (a root-started container whose workload runs as that UID), with their PID namespace and cgroup. They are
      reported and left running; with them present the scope-all C(kill(-1)) sweep is skipped.
    - A process in another PID namespace is the user's when their login started it (loginuid) or it runs in a user
      namespace they created (their rootless container); those are ended like any other.
  returned: always
  type: list
  elements: dict
  sample: [{pid: 7001, uid: 1001, user: bob, cmdline: "nginx: worker process", pid_namespace: "pid:[4026532710]",
            cgroup: "/lxc.payload.web"}]
nameless_uids:
  description:
    - UIDs with no account on the host that still run processes, with a count (up to 20). A user removed with
      C(userdel -f) shows up here; revoke such a user by its numeric UID.
  returned: always
  type: list
  elements: dict
  sample: [{uid: 1042, count: 3}]
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
run_id:
  description: The revocation's id (O(run_id), or the one generated).
  returned: always
  type: str
  sample: awx-4711-20261201T021500Z
syslog_lines:
  description: How many lines were handed to the host's syslog (one per ended session).
  returned: always
  type: int
  sample: 1
lockout:
  description:
    - With O(lockout), the lockout's own result, as M(sessionguard.mosh.lockout) returns it - RV(lockout.users),
      RV(lockout.absent_users), RV(lockout.pam), RV(lockout.sshd), RV(lockout.errors), RV(lockout.changed).
    - When the lockout did not complete, V(failed) is true and V(msg) says why; the sessions were ended anyway. A
      lockout that stopped part-way on an error gives only V(changed), V(errors), V(failed) and V(msg).
  returned: when O(lockout) is given
  type: dict
  contains:
    users:
      description: Per user named, what was closed, what was already closed, what stayed open, the notes and the
        persistence found, as RV(sessionguard.mosh.lockout#module:users).
      type: list
      elements: dict
    absent_users:
      description: Names in O(users) with no account on this host.
      type: list
      elements: str
    pam:
      description: The PAM deny entry, as RV(sessionguard.mosh.lockout#module:pam).
      type: dict
    sshd:
      description: The drop-in and sshd's reload, as RV(sessionguard.mosh.lockout#module:sshd).
      type: dict
    errors:
      description: What failed on the host (a configuration that does not validate, a reload that failed).
      type: list
      elements: str
    changed:
      description: Whether the lockout changed anything on the host (or would, in check mode).
      type: bool
  sample: {changed: true, users: [{user: bob, uid: 1001, found: true, closed: [deny list, sshd DenyUsers], already_closed: [],
           open: [], notes: []}], absent_users: [], errors: [], pam: {present: true, changed: true},
           sshd: {dropin_changed: true, reloaded: true}}
evidence:
  description:
    - The forensic snapshot, in a few fields whatever the number of processes; the file holds the full list.
    - V(complete) is true only when every process was recorded and the file was written. Otherwise V(reason) says what
      is missing and why; V(missing) is true when no file was written at all.
  returned: always
  type: dict
  contains:
    run_id:
      description: The run id, also the file's name.
      type: str
    path:
      description: The snapshot file on the host, null when none was written.
      type: str
    sha256:
      description: SHA-256 of the file's bytes.
      type: str
    size:
      description: Size of the file in bytes.
      type: int
    complete:
      description: Every process of the set was recorded and the file was written.
      type: bool
    missing:
      description: No file was written.
      type: bool
    reason:
      description: Why the snapshot is incomplete or missing, or why none was taken; null when complete.
      type: str
    process_count:
      description: Processes in the frozen set.
      type: int
    processes_recorded:
      description: Processes recorded in the file.
      type: int
    collect_seconds:
      description: Seconds spent reading the frozen set.
      type: float
  sample: {run_id: sg-20261201T021500Z-1a2b3c4d, path: /var/lib/sessionguard/evidence/sg-20261201T021500Z-1a2b3c4d.json,
           sha256: 9f2c0e5d8a0b4f6e7c1d2b3a4958675f4e3d2c1b0a99887766554433221100ff, size: 48211, complete: true,
           missing: false, reason: null, process_count: 7, processes_recorded: 7, collect_seconds: 0.041}
"""

import math
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sessionguard.mosh.plugins.module_utils._evidence import Evidence, new_run_id, run_id_error
from ansible_collections.sessionguard.mosh.plugins.module_utils._lockout import PERSISTENCE, SSHD_DIRS, refusal, run_lockout
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
            terminate_gracefully=dict(type='bool', default=False),
            run_id=dict(type='str'),
            reason=dict(type='str'),
            syslog=dict(type='bool', default=True),
            evidence=dict(type='bool', default=False),
            evidence_dir=dict(type='path', default='/var/lib/sessionguard/evidence'),
            evidence_timeout=dict(type='float', default=5),
            evidence_environ=dict(type='bool', default=False),
            evidence_keep_days=dict(type='int', default=90),
            lockout=dict(type='dict', options=dict(
                persistence=dict(type='str', choices=list(PERSISTENCE), default='report'),
                protected_users=dict(type='list', elements='raw', default=[]),
                sshd_config=dict(type='path', default='/etc/ssh/sshd_config'),
            )),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not math.isfinite(p['grace_period']) or p['grace_period'] < 0:
        module.fail_json(msg='grace_period must be a finite number of seconds, 0 or more; got %s.' % p['grace_period'])
    if not math.isfinite(p['evidence_timeout']) or p['evidence_timeout'] <= 0:
        module.fail_json(msg='evidence_timeout must be a finite number of seconds above 0; got %s.' % p['evidence_timeout'])
    if p['evidence_keep_days'] < 0:
        module.fail_json(msg='evidence_keep_days must be 0 (keep all) or more; got %d.' % p['evidence_keep_days'])
    if not os.path.isabs(p['evidence_dir']):
        module.fail_json(msg='evidence_dir must be an absolute path; got %r.' % p['evidence_dir'])
    run_id = p['run_id'] if p['run_id'] is not None else new_run_id()
    if run_id_error(run_id):
        module.fail_json(msg=run_id_error(run_id))
    try:
        targets, absent = resolve(p['users'], allow_system_users=p['allow_system_users'])
    except UserError as e:
        module.fail_json(msg=str(e))

    if p['scope'] == 'all' and any(t.uid == 0 for t in targets):
        # Every daemon of the host runs as root: allow_system_users cannot make that a revocation.
        module.fail_json(msg="users: %r is root (UID 0); scope 'all' would end every root process on the host. "
                         "Refusing, even with allow_system_users." % [t.spec for t in targets if t.uid == 0][0])
    others = [t.label for t in targets if t.uid != os.geteuid()]
    if os.geteuid() != 0 and others:
        module.fail_json(msg='revoke_sessions must run as root (become: true) to end sessions of other users: %s'
                         % ', '.join(others))

    door, locked, door_problems = p['lockout'], None, []
    if door is not None:
        sshd_bin = module.get_bin_path('sshd', opt_dirs=SSHD_DIRS)
        why = refusal(targets, absent, door['protected_users'], sshd_bin)
        if why:
            module.fail_json(msg=why)
        # The door closes first, so that nobody logs in again while the sessions end. A lockout that fails part-way
        # does not stop the kill: ending the sessions matters most; the task fails at the end, naming both.
        locked, door_problems = run_lockout(module.run_command, sshd_bin, door['sshd_config'], targets, absent,
                                            reason=p['reason'], persistence=door['persistence'],
                                            check_mode=module.check_mode, diff=module._diff)
        if door_problems:
            # As the lockout module would have failed, so that a reader of RV(lockout) sees it failed and why.
            locked.update(failed=True, msg='; '.join(door_problems))

    evidence = None
    if p['evidence']:
        evidence = Evidence(run_id, reason=p['reason'], directory=p['evidence_dir'], timeout=p['evidence_timeout'],
                            environ=p['evidence_environ'], keep_days=p['evidence_keep_days'],
                            users=[t.name if t.name is not None else t.uid for t in targets])
    result = revoke(targets, scope=p['scope'], grace_period=p['grace_period'], notice=p['notice'],
                    check_mode=module.check_mode, kill_other_uids=p['kill_other_uids'],
                    term_all=p['terminate_gracefully'], evidence=evidence, run_id=run_id, reason=p['reason'],
                    syslog=p['syslog'] and not module.check_mode)
    result['absent_users'] = absent + result['absent_users']
    result['changed'] = result['totals']['processes'] > 0
    if locked is not None:
        diff = locked.pop('diff', None)
        if diff is not None:
            result['diff'] = diff
        result['lockout'] = locked
        result['changed'] = result['changed'] or bool(locked.get('changed'))
    if result['spared']:
        module.warn('%d process(es) of the revoked sessions run this task and were left running: %s'
                    % (len(result['spared']), ', '.join(str(e['pid']) for e in result['spared'])))
    if p['evidence'] and result['evidence']['reason'] and result['totals']['processes'] and not module.check_mode:
        ev = result['evidence']
        module.warn('the forensic snapshot is %s: %s' % ('missing' if ev['missing'] else 'incomplete', ev['reason']))
    for entry in result['unreadable']:
        module.warn('pid %d was judged without its binary: %s' % (entry['pid'], entry['reason']))
    failures = ['lockout: %s' % '; '.join(door_problems)] if door_problems else []
    if 'aborted' in result:
        a = result['aborted']
        failures.append('revocation failed at stage %s (%s); finished anyway: %d process(es) killed, %d thawed'
                        % (a['stage'], a['error'], a['killed_count'], a['thawed_count']))
    elif result['survivors']:
        failures.append('%d process(es) survived revocation: %s' % (
            result.get('survivor_count', len(result['survivors'])),
            ', '.join(str(e['pid']) for e in result['survivors'])))
    if failures:
        module.fail_json(msg='; '.join(failures), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: revocation_log
short_description: Append one host's revocation record to the hash-chained log on the controller
version_added: 1.0.0
description:
  - Runs on the controller (an action plugin); the C(sessionguard.mosh.revoke) role calls it once per host after the
    revocation. Nothing of the record is written on the managed host.
  - Appends one JSON Lines record to the log at O(path) - who ran it (the controller user, and the AWX or Tower job id,
    job template and launching user from the C(awx_*) or C(tower_*) job variables), when, why (O(reason)), the users,
    the host, what the lockout closed, every session ended with its client address, processes and signals, the
    survivors, the result, and the forensic snapshot's path and SHA-256.
  - Each record holds the SHA-256 of the record before it (C(prev)) and its own (C(sha256), over the record's
    canonical JSON without it). The log is appended under an exclusive lock, so Ansible's forks and parallel runs on
    one controller never interleave lines or fork the chain.
  - The host's snapshot (the C(path) in the module result's C(evidence)) is copied to C(evidence/HOST/RUN_ID.json) next to the log, and its hash
    checked against the one the host reported.
  - Refuses to append (and fails) when the log's last record is cut short or does not match its own hash; check
    the log with C(ansible-playbook sessionguard.mosh.verify_log).
author:
  - sessionguard maintainers (@sessionguard)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: none
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The log file on the controller. Created (mode C(0600), its directory C(0700)) when missing.
      - Default C($XDG_STATE_HOME/sessionguard/revocations.jsonl), or C(~/.local/state/sessionguard/revocations.jsonl)
        when C(XDG_STATE_HOME) is not set.
    type: path
  run_id:
    description: The revocation's id, the same in every host's record, the snapshot files and the hosts' syslog lines.
    type: str
    required: true
  reason:
    description: Why the users were revoked.
    type: str
    default: ""
  users:
    description: The users revoked.
    type: list
    elements: raw
    required: true
  lockout:
    description: The registered result of M(sessionguard.mosh.lockout) on the host.
    type: raw
  revocation:
    description: The registered result of M(sessionguard.mosh.revoke_sessions) on the host.
    type: raw
  result:
    description: The host's verdict (the role's one-line status).
    type: str
    default: ""
  fetch_evidence:
    description: Copy the host's snapshot next to the log.
    type: bool
    default: true
seealso:
  - module: sessionguard.mosh.verify_log
  - module: sessionguard.mosh.revoke_sessions
"""

EXAMPLES = r"""
---
- name: Record the revocation on the controller
  sessionguard.mosh.revocation_log:
    run_id: "{{ run_id }}"
    reason: INC-4711 compromised laptop
    users: [bob]
    lockout: "{{ lockout_result }}"
    revocation: "{{ revoke_result }}"
    result: revoked
  register: logged

- name: Show the new chain head
  ansible.builtin.debug:
    msg: "{{ logged.sha256 }}"
"""

RETURN = r"""
path:
  description: The log file.
  returned: always
  type: str
  sample: /home/ops/.local/state/sessionguard/revocations.jsonl
sha256:
  description: The new record's hash; the chain head once every host of the run is recorded.
  returned: always
  type: str
  sample: 3c1f0d2e9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a291807f6e
prev:
  description: The hash of the record before it.
  returned: always
  type: str
  sample: 0000000000000000000000000000000000000000000000000000000000000000
evidence:
  description:
    - The host's snapshot summary as recorded, with C(controller_path) and C(controller_sha256) of the copy next to
      the log, and C(fetch_error) when the copy failed or does not match. Null when the host took no snapshot.
  returned: always
  type: dict
  sample: {path: /var/lib/sessionguard/evidence/sg-20261201T021500Z-1a2b3c4d.json, sha256: "9f2c...",
           controller_path: /home/ops/.local/state/sessionguard/evidence/web1/sg-20261201T021500Z-1a2b3c4d.json,
           controller_sha256: "9f2c..."}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sessionguard.mosh.plugins.module_utils._revlog import RECORD_ARGS


def main():
    module = AnsibleModule(
        argument_spec=RECORD_ARGS,
    )
    module.fail_json(msg='sessionguard.mosh.revocation_log runs on the controller as an action plugin; '
                     'call it by its full name in a task.')


if __name__ == '__main__':
    main()

#!/usr/bin/python
# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: verify_log
short_description: Check the hash chain of a sessionguard revocation log
version_added: 1.0.0
description:
  - Reads the revocation log written by M(sessionguard.mosh.revocation_log) and checks every record - its own
    SHA-256, and that its C(prev) is the hash of the record before it. Fails naming the first broken record and its
    line number; otherwise returns the number of records and the chain head.
  - A record whose bytes were changed breaks its own hash; a removed or inserted record breaks the next record's
    C(prev); a cut-off last line is reported as truncated.
  - Given O(head) (the chain head printed by the revoke role after a run, kept elsewhere), it also fails when the
    record that head names is no longer in the log - the last record was changed (even with its hash recomputed), or
    records were dropped from the end, or the whole log was truncated.
  - Runs on the controller (an action plugin). C(ansible-playbook sessionguard.mosh.verify_log) runs it.
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
    support: full
    details: Reads only.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The log file. Default C($XDG_STATE_HOME/sessionguard/revocations.jsonl), or
        C(~/.local/state/sessionguard/revocations.jsonl).
    type: path
  head:
    description: A chain head kept from an earlier run; it must be the hash of a record in the log.
    type: str
seealso:
  - module: sessionguard.mosh.revocation_log
"""

EXAMPLES = r"""
---
- name: Verify the revocation log against the head kept in the ticket
  sessionguard.mosh.verify_log:
    path: /var/log/sessionguard/revocations.jsonl
    head: 3c1f0d2e9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a291807f6e
  register: log_check
"""

RETURN = r"""
ok:
  description: Whether the chain is intact (and holds O(head) when given).
  returned: always
  type: bool
  sample: true
records:
  description: Records read before the first broken one (all of them when intact).
  returned: always
  type: int
  sample: 12
head:
  description: The hash of the last record; null for an empty log or when broken.
  returned: always
  type: str
  sample: 3c1f0d2e9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a291807f6e
head_line:
  description: The line of the record O(head) names.
  returned: when O(head) is given and found
  type: int
  sample: 10
broken:
  description: The first broken record - its line number, the reason, and its run id and host where readable.
  returned: always
  type: dict
  sample: {line: 3, reason: "record 3 (line 3) was changed: its content does not match its sha256", run_id: sg-20261201T021500Z-1a2b3c4d,
           host: web1}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sessionguard.mosh.plugins.module_utils._revlog import VERIFY_ARGS

from ansible_collections.sessionguard.mosh.plugins.module_utils._revlog import default_path, verify


def main():
    module = AnsibleModule(
        argument_spec=VERIFY_ARGS,
        supports_check_mode=True,
    )
    path = module.params['path'] or default_path()
    try:
        out = verify(path, module.params['head'] or None)
    except OSError as e:
        module.fail_json(msg='cannot read the revocation log %s: %s' % (path, e.strerror))
    if not out['ok']:
        module.fail_json(msg='%s: BROKEN at line %d: %s' % (path, out['broken']['line'], out['broken']['reason']), **out)
    module.exit_json(changed=False, msg='%s: %d record(s), chain intact, head %s' % (path, out['records'], out['head']),
                     **out)


if __name__ == '__main__':
    main()

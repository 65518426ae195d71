#!/usr/bin/python
# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_report
short_description: Write the fleet session report (JSON, CSV, HTML) on the controller
version_added: 1.1.0
description:
  - Reads, for every host in O(hosts), the result of M(sessionguard.mosh.session_facts) registered under
    O(result_var), and writes into O(dest) on the controller C(sessions.json) (for machines), C(sessions.csv)
    (for spreadsheets; a value starting with C(=), C(+), C(-), C(@), a tab, a carriage return or an apostrophe gets
    a leading apostrophe, so no value becomes a formula) and C(index.html) (one self-contained page with a summary,
    a sortable and filterable table of every session and, with O(history_days), the login history).
  - Hosts that were unreachable or failed are named as such in all three files.
  - Every value comes from the hosts and may be hostile; the HTML escapes all of them and its Content-Security-Policy
    allows no script but its own.
  - This is an action plugin; it runs on the controller only. Run it once (C(run_once=true)).
author:
  - sessionguard maintainers (@sessionguard)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the report is built and summarized but not written.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  dest:
    description: Directory on the controller for the three files; made if missing. Existing files are replaced.
    type: path
    required: true
  hosts:
    description: Every host the report covers, usually C(ansible_play_hosts_all).
    type: list
    elements: str
    required: true
  result_var:
    description:
      - Name of the variable each host registered the M(sessionguard.mosh.session_facts) result under (with
        C(ignore_unreachable=true), so unreachable hosts have one too).
    type: str
    required: true
  history_days:
    description: The O(sessionguard.mosh.session_facts#module:history_days) the audit used; V(0) for no history table.
    type: int
    default: 0
seealso:
  - module: sessionguard.mosh.session_facts
  - role: sessionguard.mosh.audit
"""

EXAMPLES = r"""
---
- name: Gather live sessions and the last week's logins
  sessionguard.mosh.session_facts:
    include_ssh: true
    history_days: 7
  register: audit_result
  ignore_unreachable: true
  become: true

- name: Write the fleet report
  sessionguard.mosh.fleet_report:
    dest: /var/tmp/fleet-report
    hosts: "{{ ansible_play_hosts_all }}"
    result_var: audit_result
    history_days: 7
  run_once: true
  register: report

- name: Show the per-host table
  ansible.builtin.debug:
    msg: "{{ report.table }}"
  run_once: true
"""

RETURN = r"""
files:
  description: The files written.
  returned: always
  type: list
  elements: str
  sample: [/var/tmp/fleet-report/sessions.json, /var/tmp/fleet-report/sessions.csv, /var/tmp/fleet-report/index.html]
summary:
  description: The counts at the top of the page.
  returned: always
  type: dict
  sample: {hosts: 4, hosts_audited: 3, hosts_unreachable: 1, hosts_failed: 0, users: 2, sessions: 5, attached: 3,
           detached: 2, orphans: 1, suspicious: 0, logins: 12}
unreachable_hosts:
  description: Hosts that could not be audited (unreachable or failed).
  returned: always
  type: list
  elements: str
  sample: [web03]
table:
  description: Lines of a short table, per host its sessions, and the hosts not audited.
  returned: always
  type: list
  elements: str
elapsed:
  description: Seconds spent building and writing the report.
  returned: always
  type: float
"""

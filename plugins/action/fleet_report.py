# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Writes the fleet session report on the controller, from what every host of the play gathered."""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.sessionguard.mosh.plugins.module_utils import _fleetreport


def host_entry(name, result):
    """One host for the report from its registered session_facts result (None: it never got that far)."""
    if not isinstance(result, dict):
        return {'name': name, 'status': 'failed', 'error': 'no audit result (the host failed before the audit)'}
    if result.get('unreachable'):
        return {'name': name, 'status': 'unreachable', 'error': result.get('msg') or 'unreachable'}
    if result.get('failed') or result.get('skipped') or 'ansible_facts' not in result:
        return {'name': name, 'status': 'failed', 'error': result.get('msg') or 'the audit did not run'}
    return {'name': name, 'status': 'audited', 'error': None, 'facts': result['ansible_facts']}


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        _spec, args = self.validate_argument_spec(argument_spec=dict(
            dest=dict(type='path', required=True),
            hosts=dict(type='list', elements='str', required=True),
            result_var=dict(type='str', required=True),
            history_days=dict(type='int', default=0),
        ))
        started = time.monotonic()
        hostvars = task_vars.get('hostvars', {})
        hosts = []
        for name in args['hosts']:
            try:
                got = hostvars[name].get(args['result_var']) if name in hostvars else None
            except Exception as e:  # an undefined or broken variable of one host must not hide the others
                got = {'failed': True, 'msg': 'its result could not be read: %s' % e}
            hosts.append(host_entry(name, got))
        report = _fleetreport.build(hosts, history_days=args['history_days'])
        paths = []
        if not self._task.check_mode:
            try:
                paths = _fleetreport.write(report, args['dest'])
            except OSError as e:
                raise AnsibleActionFail('could not write the report into %s: %s' % (args['dest'], e))
        result.update(changed=bool(paths), files=paths, summary=report['summary'],
                      unreachable_hosts=[d['host'] for d in report['unreachable']],
                      table=_fleetreport.table(report), elapsed=round(time.monotonic() - started, 3))
        return result

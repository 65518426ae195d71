# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin for sessionguard.mosh.verify_log: checks the revocation log on the controller (documented in the
module)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.sessionguard.mosh.plugins.module_utils._revlog import VERIFY_ARGS, default_path, verify

_ARGS = VERIFY_ARGS


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(_ARGS)

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec=_ARGS)
        path = args['path'] or default_path()
        head = args['head'] or None
        try:
            out = verify(path, head)
        except OSError as e:
            result.update(failed=True, msg='cannot read the revocation log %s: %s' % (path, e.strerror), path=path)
            return result
        result.update(out)
        result['changed'] = False
        if out['ok']:
            result['msg'] = '%s: %d record(s), chain intact, head %s' % (path, out['records'], out['head'])
            if head:
                result['msg'] += '; the given head is record %d' % out['head_line']
        else:
            result['failed'] = True
            result['msg'] = '%s: BROKEN at line %d: %s' % (path, out['broken']['line'], out['broken']['reason'])
        return result

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin for sessionguard.mosh.revocation_log: runs on the controller (documentation in the module)."""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import socket

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.sessionguard.mosh.plugins.module_utils._revlog import (
    RECORD_ARGS, LogError, append, awx_context, build_record, default_path)

_ARGS = RECORD_ARGS


def controller_identity():
    """Who runs the play on the controller: the process's UID and its name (not $USER, which anyone can set)."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    return {'user': name, 'uid': uid, 'host': socket.gethostname()}


def _safe_name(text):
    return ''.join(c if c.isalnum() or c in '._-' else '_' for c in text) or '_'


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(_ARGS)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec=_ARGS)
        path = args['path'] or default_path()
        host = task_vars.get('inventory_hostname')
        revocation = args['revocation'] if isinstance(args['revocation'], dict) else {}
        evidence = dict(revocation.get('evidence') or {}) or None
        if evidence and evidence.get('path') and args['fetch_evidence']:
            evidence.update(self._fetch(evidence, path, host, args['run_id'], task_vars))
        record = build_record(
            host=host, run_id=args['run_id'], reason=args['reason'], users=args['users'],
            controller=controller_identity(), awx=awx_context(task_vars), lockout=args['lockout'],
            revoke=revocation, result=args['result'], evidence=evidence,
            check_mode=bool(self._task.check_mode))
        try:
            sealed = append(path, record)
        except (LogError, OSError) as e:
            raise AnsibleActionFail(to_text(e))
        result.update(changed=True, path=path, sha256=sealed['sha256'], prev=sealed['prev'],
                      evidence=evidence)
        return result

    def _fetch(self, evidence, log_path, host, run_id, task_vars):
        """Copy the host's snapshot next to the log (evidence/HOST/RUN_ID.json); check it against the module's hash."""
        dest_dir = os.path.join(os.path.dirname(os.path.abspath(log_path)), 'evidence', _safe_name(host))
        dest = os.path.join(dest_dir, _safe_name(run_id) + '.json')
        got = self._execute_module(module_name='ansible.legacy.slurp', module_args={'src': evidence['path']},
                                   task_vars=task_vars)
        if got.get('failed') or 'content' not in got:
            return {'controller_path': None, 'fetch_error': to_text(got.get('msg', 'slurp failed'))[:500]}
        data = base64.b64decode(got['content'])
        digest = hashlib.sha256(data).hexdigest()
        if not os.path.isdir(dest_dir):
            os.makedirs(dest_dir, 0o700)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        out = {'controller_path': dest, 'controller_sha256': digest}
        if digest != evidence.get('sha256'):
            out['fetch_error'] = 'the copy on the controller does not match the hash the host reported'
        return out

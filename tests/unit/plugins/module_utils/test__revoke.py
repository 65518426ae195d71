# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.sessionguard.mosh.plugins.module_utils._revoke import sanitize_message


def test_message_loses_escape_sequences_and_gets_crlf():
    out = sanitize_message('Access revoked\x1b]0;pwned\x07\nbye\x9b2J')
    assert out == b'\r\nAccess revoked]0;pwned\r\nbye2J\r\n'

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one place where bytes from the host become text: hostile input made safe to return and print.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Everything a revoked user controls (argv, comm, exe path, cgroup names, utmp host text, environment) is read
as bytes and decoded here. Invalid UTF-8 becomes ``\\xe9`` (``backslashreplace``), so the result is always
valid JSON for Ansible. C0 and C1 controls, DEL and Unicode bidi/format controls are *escaped*, not
stripped: stripped, ``ba\\u202esh`` would read as ``bash``; escaped, the deception stays visible and no
terminal, YAML callback or browser acts on the raw character.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; bidi embeddings/overrides/isolates, LRM/RLM/ALM, zero-width and line/paragraph
# separators, and the byte order mark: every character that changes how the text around it is shown.
_UNSAFE = re.compile('[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]')


def _escape_char(m):
    c = ord(m.group(0))
    return '\\x%02x' % c if c < 0x100 else '\\u%04x' % c


def escape(text):
    """``text`` with every control and bidi character written as a visible escape (``\\x1b``, ``\\u202e``)."""
    return _UNSAFE.sub(_escape_char, text)


def decode(raw):
    """Bytes read from the host as safe text: invalid UTF-8 and controls become visible escapes."""
    if not isinstance(raw, bytes):
        # A str from an os call carries undecodable bytes as lone surrogates, which JSON cannot hold.
        raw = raw.encode('utf-8', 'surrogateescape')
    return escape(raw.decode('utf-8', 'backslashreplace'))

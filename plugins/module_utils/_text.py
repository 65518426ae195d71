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

# C0 controls, DEL, C1 controls; bidi embeddings/overrides/isolates, LRM/RLM/ALM, zero-width and line/paragraph
# separators, and the byte order mark: every character that changes how the text around it is shown.
_UNSAFE_CODES = (list(range(0x00, 0x20)) + list(range(0x7f, 0xa0)) + [0x061c] + list(range(0x200b, 0x2010))
                 + list(range(0x2028, 0x202f)) + list(range(0x2060, 0x206a)) + [0xfeff])
# One table for str.translate: a user can hand over megabytes of control characters, and a per-match callback
# would spend seconds on them.
_ESCAPES = dict((c, '\\x%02x' % c if c < 0x100 else '\\u%04x' % c) for c in _UNSAFE_CODES)


def escape(text):
    """``text`` with every control and bidi character written as a visible escape (``\\x1b``, ``\\u202e``)."""
    return text.translate(_ESCAPES)


def decode(raw):
    """Bytes read from the host as safe text: invalid UTF-8 and controls become visible escapes."""
    if isinstance(raw, bytes) and raw.isascii():
        # The common case, once per process and scan: printable ASCII needs neither decoding nor escapes.
        text = raw.decode('ascii')
        if text.isprintable():
            return text
    if not isinstance(raw, bytes):
        # A str from an os call carries undecodable bytes as lone surrogates, which JSON cannot hold.
        raw = raw.encode('utf-8', 'surrogateescape')
    return escape(raw.decode('utf-8', 'backslashreplace'))


def json_size(text):
    """Bytes ``text`` takes in JSON as Ansible writes it (ASCII only: every other character is a \\u escape)."""
    n = 0
    for c in text:
        o = ord(c)
        n += 1 if o < 0x80 and c not in '"\\' else 2 if o < 0x80 else 6 if o < 0x10000 else 12
    return n


def cut(text, limit):
    """``text`` cut to at most ``limit`` JSON bytes, marked with ``...`` when cut."""
    if len(text) * 12 <= limit or json_size(text) <= limit:
        return text
    n, out = 3, []
    for c in text:
        n += json_size(c)
        if n > limit:
            break
        out.append(c)
    return ''.join(out) + '...'

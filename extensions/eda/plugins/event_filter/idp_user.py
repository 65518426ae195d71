# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Event filter: what an identity provider's webhook says about a user, in one shape the rulebook acts on.

Adds ``event.sessionguard = {users, users_text, action, reason, id}`` when the payload says users were
deactivated or suspended, and leaves the event as it was otherwise. Two payloads are understood:

- Okta event hooks: ``{"data": {"events": [{"eventType": "user.lifecycle.deactivate" | "user.lifecycle.suspend",
  "uuid": ..., "target": [{"type": "User", "alternateId": "bob@corp.example"}]}]}}`` (several events per delivery);
- a generic JSON body: ``{"event": "user.deactivated" | "user.suspended", "user": "bob", "id": ...}``
  (``user`` may also be a list).

A login such as ``bob@corp.example`` maps to the host user name ``bob`` (its local part) unless ``user_map`` maps
it; the playbook checks the result (sessionguard.mosh.user_list) before anything changes.

Options: ``user_map`` (dict, login or subject -> host user name), ``keep_domain`` (bool, default false: use the
whole login as the host user name, for hosts that know users as ``bob@corp.example`` through SSSD).
"""

from __future__ import annotations

from typing import Any

OKTA_TYPES = {"user.lifecycle.deactivate": "deactivated", "user.lifecycle.suspend": "suspended"}
GENERIC_TYPES = {"user.deactivated": "deactivated", "user.suspended": "suspended", "user.disabled": "deactivated"}


def host_user(login: str, user_map: dict | None = None, keep_domain: bool = False) -> str:
    """The host user name for an identity provider's login or subject."""
    login = str(login).strip()
    if user_map and login in user_map:
        return str(user_map[login])
    if not keep_domain and "@" in login:
        return login.split("@", 1)[0]
    return login


def _okta(payload: dict) -> tuple[list[str], str, str] | None:
    data = payload.get("data")
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        return None
    logins, actions, ids = [], [], []
    for ev in events:
        if not isinstance(ev, dict) or ev.get("eventType") not in OKTA_TYPES:
            continue
        for target in ev.get("target") or []:
            if isinstance(target, dict) and target.get("type") == "User" and target.get("alternateId"):
                logins.append(target["alternateId"])
        actions.append(OKTA_TYPES[ev["eventType"]])
        ids.append(str(ev.get("uuid", "")))
    if not logins:
        return None
    return logins, "/".join(sorted(set(actions))), ",".join(i for i in ids if i)


def _generic(payload: dict) -> tuple[list[str], str, str] | None:
    action = GENERIC_TYPES.get(payload.get("event") or payload.get("eventType"))
    user = payload.get("user")
    if not action or not user:
        return None
    logins = user if isinstance(user, list) else [user]
    return [str(x) for x in logins], action, str(payload.get("id", ""))


def main(event: dict[str, Any], user_map: dict | None = None, keep_domain: bool = False) -> dict[str, Any]:
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return event
    found = _okta(payload) or _generic(payload)
    if not found:
        return event
    logins, action, ident = found
    users = []
    for login in logins:
        name = host_user(login, user_map, keep_domain)
        if name not in users:
            users.append(name)
    source = "Okta" if "data" in payload else "identity provider"
    event["sessionguard"] = {
        "users": users,
        "users_text": "\n".join(users),
        "action": action,
        "id": ident,
        # The revoke survey takes at most 500 characters of reason.
        "reason": ("%s: user %s (%s) event %s" % (source, action, ", ".join(logins), ident or "without id"))[:500],
    }
    return event

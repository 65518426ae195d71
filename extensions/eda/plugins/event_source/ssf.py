# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Event source: Shared Signals Framework pushes - Security Event Tokens (RFC 8417) delivered over HTTP push
(RFC 8935), as Okta, Google and Microsoft send them.

Each POST carries one SET, a signed JWT, as its body (``Content-Type: application/secevent+jwt``). The SET is
accepted only when every check passes, in this order; a SET that fails one changes nothing:

1. the transport's bearer token, when ``token`` is set (HTTP 401 otherwise: that is HTTP authentication, not the
   SET's);
2. a compact JWS whose header names an algorithm of ``algorithms`` (never ``none``) and a key of the JWKS in
   ``jwks_file`` (``invalid_key``), with a valid signature (``authentication_failed``);
3. ``iss`` equal to ``issuer`` (``invalid_issuer``) and ``aud`` containing ``audience`` (``invalid_audience``);
4. ``iat`` not older than ``max_age`` seconds nor in the future, ``exp`` (if present) not passed
   (``invalid_request``);
5. a ``jti`` not seen before within ``max_age`` (``invalid_request``: a replay);
6. an ``events`` claim.

Answers as RFC 8935 section 2 says: ``202 Accepted`` with an empty body once the SET is taken, ``400`` with
``{"err": CODE, "description": ...}`` when it is not.

CAEP ``session-revoked`` and ``credential-change`` and RISC ``account-disabled`` (and ``account-purged``) become
events with ``sessionguard = {users, users_text, action, reason, id}``, the shape the rulebook acts on; other
event types are accepted and ignored. The subject (``sub_id`` of the event or the SET, RFC 9493, or ``sub``)
maps to a host user name: ``user_map`` first, else an email's local part, an ``iss_sub``'s ``sub``, an
``opaque`` id; the playbook checks the name before anything changes.

Options: ``host`` (default 127.0.0.1), ``port`` (required), ``path`` (default ``/``), ``token``, ``jwks_file``
(required), ``issuer`` (required), ``audience`` (required), ``max_age`` (seconds, default 300), ``algorithms``
(default RS256, ES256), ``user_map``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import jwt
from aiohttp import web

logger = logging.getLogger(__name__)

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
ACTIONS = {
    CAEP + "session-revoked": "session revoked",
    CAEP + "credential-change": "credential changed",
    RISC + "account-disabled": "account disabled",
    RISC + "account-purged": "account purged",
}
CONTENT_TYPE = "application/secevent+jwt"


class SetError(Exception):
    """An RFC 8935 error answer: ``err`` is a code of the IANA "Security Event Token Error Codes" registry."""

    def __init__(self, err: str, description: str) -> None:
        super().__init__(description)
        self.err, self.description = err, description


def subject_user(subject: Any, user_map: dict | None = None) -> str | None:
    """The host user name an RFC 9493 subject identifier (or a bare ``sub``) names, or None."""
    if isinstance(subject, str):
        keys = [subject]
    elif isinstance(subject, dict):
        fmt = subject.get("format")
        value = {"email": subject.get("email"), "iss_sub": subject.get("sub"), "opaque": subject.get("id"),
                 "account": subject.get("uri"), "phone_number": None}.get(fmt)
        if not value:
            return None
        keys = [value]
    else:
        return None
    for key in keys:
        if user_map and key in user_map:
            return str(user_map[key])
    value = keys[0]
    if value.startswith("acct:"):
        value = value[5:]
    return value.split("@", 1)[0] if "@" in value else value


class Receiver:
    """Checks SETs; one per source, holding the keys and the ``jti``s seen."""

    def __init__(self, args: dict[str, Any]) -> None:
        for required in ("jwks_file", "issuer", "audience"):
            if not args.get(required):
                raise ValueError("sessionguard.mosh.ssf: missing required argument %s" % required)
        self.algorithms = list(args.get("algorithms") or ["RS256", "ES256"])
        if any(a.lower() == "none" for a in self.algorithms):
            raise ValueError("sessionguard.mosh.ssf: the none algorithm is never accepted")
        with open(args["jwks_file"], encoding="utf-8") as f:
            self.jwks = jwt.PyJWKSet.from_json(f.read())
        self.issuer = args["issuer"]
        self.audience = args["audience"]
        self.max_age = int(args.get("max_age", 300))
        self.user_map = args.get("user_map") or {}
        self.seen: dict[str, float] = {}

    def _key(self, header: dict) -> Any:
        kid = header.get("kid")
        for key in self.jwks.keys:
            if kid is None or key.key_id == kid:
                return key
        raise SetError("invalid_key", "no key %r in the configured JWKS" % (kid,))

    def check(self, token: str, now: float | None = None) -> dict:
        """The SET's claims, or SetError. Records the ``jti`` only when every check passed."""
        now = time.time() if now is None else now
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise SetError("invalid_request", "not a compact JWS: %s" % e) from None
        if header.get("alg") not in self.algorithms:
            raise SetError("invalid_request", "algorithm %r is not accepted (%s)" % (header.get("alg"),
                                                                                     ", ".join(self.algorithms)))
        key = self._key(header)
        try:
            options = {"require": ["iss", "aud", "iat", "jti"], "verify_iat": False}
            claims = jwt.decode(token, key=key, algorithms=self.algorithms, issuer=self.issuer,
                                audience=self.audience, options=options)
        except jwt.InvalidSignatureError:
            raise SetError("authentication_failed", "the signature does not verify with key %r" % key.key_id) from None
        except jwt.InvalidIssuerError:
            raise SetError("invalid_issuer", "the issuer is not %r" % self.issuer) from None
        except jwt.InvalidAudienceError:
            raise SetError("invalid_audience", "the audience does not include %r" % self.audience) from None
        except jwt.ExpiredSignatureError:
            raise SetError("invalid_request", "the SET has expired (exp)") from None
        except jwt.PyJWTError as e:
            raise SetError("invalid_request", str(e)) from None
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or iat > now + 60 or now - iat > self.max_age:
            raise SetError("invalid_request", "the SET was issued at %r, not within the last %d seconds"
                           % (iat, self.max_age))
        events = claims.get("events")
        if not isinstance(events, dict) or not events:
            raise SetError("invalid_request", "the SET has no events claim")
        jti = str(claims["jti"])
        self.seen = {k: v for k, v in self.seen.items() if now - v <= self.max_age + 60}
        if jti in self.seen:
            raise SetError("invalid_request", "jti %r was already received (a replay)" % jti)
        self.seen[jti] = now
        return claims

    def events(self, claims: dict) -> list[dict]:
        """The rulebook's events for one accepted SET: one per recognized event type with a known subject."""
        out = []
        for event_type, body in claims["events"].items():
            action = ACTIONS.get(event_type)
            if not action:
                continue
            body = body if isinstance(body, dict) else {}
            subject = body.get("subject") or body.get("sub_id") or claims.get("sub_id") or claims.get("sub")
            user = subject_user(subject, self.user_map)
            if not user:
                logger.warning("SET %s: %s for a subject that names no user: %r", claims["jti"], event_type, subject)
                continue
            reason = "SSF %s from %s (SET %s)" % (action, claims["iss"], claims["jti"])
            out.append({"sessionguard": {"users": [user], "users_text": user, "action": action,
                                         "id": str(claims["jti"]), "reason": reason[:500]},
                        "ssf": {"event_type": event_type, "iss": claims["iss"], "jti": claims["jti"],
                                "subject": subject, "event": body}})
        return out


def _error(err: str, description: str) -> web.Response:
    return web.json_response({"err": err, "description": description}, status=400)


def make_app(queue: asyncio.Queue, args: dict[str, Any]) -> web.Application:
    receiver = Receiver(args)
    token = args.get("token")
    path = args.get("path", "/")

    async def push(request: web.Request) -> web.Response:
        if token is not None and request.headers.get("Authorization", "") != "Bearer %s" % token:
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        if request.content_type != CONTENT_TYPE:
            return _error("invalid_request", "Content-Type must be %s" % CONTENT_TYPE)
        body = (await request.text()).strip()
        try:
            claims = receiver.check(body)
        except SetError as e:
            logger.warning("SET refused: %s: %s", e.err, e.description)
            return _error(e.err, e.description)
        for event in receiver.events(claims):
            await queue.put(event)
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post(path, push)
    return app


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    app = make_app(queue, args)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.get("host", "127.0.0.1"), int(args["port"]))
    await site.start()
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    # Only to try the receiver by hand: prints what the rulebook would get.
    class _Print:
        async def put(self, event: dict) -> None:
            print(json.dumps(event))

    import sys
    asyncio.run(main(_Print(), json.loads(sys.argv[1])))  # type: ignore[arg-type]

"""The EDA plugins on their own: the Shared Signals receiver's checks (extensions/eda/plugins/event_source/ssf.py)
and the identity-provider payload filter (extensions/eda/plugins/event_filter/idp_user.py). End to end, through the
real ansible-rulebook, in tests/fleet/test_eda.py."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgtest.interpreters import REPO

PLUGINS = os.path.join(REPO, 'extensions', 'eda', 'plugins')
ISSUER, AUDIENCE = 'https://idp.example', 'https://rp.example/ssf'
SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked'
CREDENTIAL_CHANGE = 'https://schemas.openid.net/secevent/caep/event-type/credential-change'
ACCOUNT_DISABLED = 'https://schemas.openid.net/secevent/risc/event-type/account-disabled'


def load(kind, name):
    spec = importlib.util.spec_from_file_location('sg_eda_%s' % name, os.path.join(PLUGINS, kind, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ssf = load('event_source', 'ssf')
idp_user = load('event_filter', 'idp_user')


def b64(n):
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, 'big')).rstrip(b'=').decode()


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def receiver(tmp_path):
    pub = KEY.public_key().public_numbers()
    jwks = {'keys': [{'kty': 'RSA', 'kid': 'k1', 'alg': 'RS256', 'use': 'sig', 'n': b64(pub.n), 'e': b64(pub.e)}]}
    (tmp_path / 'jwks.json').write_text(json.dumps(jwks))
    return ssf.Receiver({'jwks_file': str(tmp_path / 'jwks.json'), 'issuer': ISSUER, 'audience': AUDIENCE,
                         'max_age': 300, 'user_map': {'robert@corp.example': 'bob'}})


def make(key=KEY, kid='k1', alg='RS256', **claims):
    body = {'iss': ISSUER, 'aud': AUDIENCE, 'iat': int(time.time()), 'jti': os.urandom(8).hex(),
            'events': {SESSION_REVOKED: {'subject': {'format': 'email', 'email': 'alice@corp.example'}}}}
    body.update(claims)
    return jwt.encode(body, key, algorithm=alg, headers={'kid': kid, 'typ': 'secevent+jwt'})


def refused(receiver, token):
    with pytest.raises(ssf.SetError) as e:
        receiver.check(token)
    return e.value.err


def test_a_good_set_is_accepted_once(receiver):
    token = make()
    claims = receiver.check(token)
    [event] = receiver.events(claims)
    assert event['sessionguard']['users'] == ['alice'] and event['sessionguard']['action'] == 'session revoked'
    assert refused(receiver, token) == 'invalid_request'


@pytest.mark.parametrize('token, err', [
    (lambda: make(key=OTHER), 'authentication_failed'),
    (lambda: make(key=OTHER, kid='evil'), 'invalid_key'),
    (lambda: make(iss='https://evil.example'), 'invalid_issuer'),
    (lambda: make(aud='https://other.example'), 'invalid_audience'),
    (lambda: make(iat=int(time.time()) - 301), 'invalid_request'),
    (lambda: make(iat=int(time.time()) + 3600), 'invalid_request'),
    (lambda: make(exp=int(time.time()) - 10), 'invalid_request'),
    (lambda: make(events={}), 'invalid_request'),
    (lambda: make(jti=None), 'invalid_request'),
    (lambda: make(key='a-shared-secret-that-is-32-bytes!', alg='HS256'), 'invalid_request'),
    (lambda: jwt.encode({'iss': ISSUER}, None, algorithm='none'), 'invalid_request'),
    (lambda: 'not a token', 'invalid_request'),
])
def test_a_bad_set_is_refused_with_its_rfc8935_code(receiver, token, err):
    assert refused(receiver, token()) == err
    assert receiver.seen == {}


def test_a_refused_set_does_not_burn_its_jti(receiver):
    token = make(aud='https://other.example', jti='j-1')
    assert refused(receiver, token) == 'invalid_audience'
    assert receiver.check(make(jti='j-1'))['jti'] == 'j-1'


@pytest.mark.parametrize('event, subject, user, action', [
    (SESSION_REVOKED, {'format': 'email', 'email': 'robert@corp.example'}, 'bob', 'session revoked'),
    (CREDENTIAL_CHANGE, {'format': 'iss_sub', 'iss': ISSUER, 'sub': 'carol'}, 'carol', 'credential changed'),
    (ACCOUNT_DISABLED, {'format': 'opaque', 'id': 'dave'}, 'dave', 'account disabled'),
])
def test_caep_and_risc_events_become_revocations(receiver, event, subject, user, action):
    claims = receiver.check(make(events={event: {'subject': subject}}))
    [out] = receiver.events(claims)
    assert out['sessionguard']['users_text'] == user and out['sessionguard']['action'] == action
    assert out['sessionguard']['reason'].startswith('SSF %s from %s' % (action, ISSUER))


def test_other_event_types_are_accepted_and_ignored(receiver):
    claims = receiver.check(make(events={'https://example.com/other': {}}))
    assert receiver.events(claims) == []


def test_the_none_algorithm_cannot_be_configured(tmp_path):
    (tmp_path / 'jwks.json').write_text(json.dumps({'keys': []}))
    with pytest.raises(ValueError, match='none'):
        ssf.Receiver({'jwks_file': str(tmp_path / 'jwks.json'), 'issuer': ISSUER, 'audience': AUDIENCE,
                      'algorithms': ['RS256', 'none']})


def okta(*events):
    return {'payload': {'eventType': 'com.okta.event_hook', 'data': {'events': list(events)}}, 'meta': {}}


def okta_event(kind, login, uuid='u1'):
    return {'eventType': kind, 'uuid': uuid, 'target': [{'type': 'User', 'alternateId': login}]}


def test_idp_filter_reads_okta_batches():
    event = idp_user.main(okta(okta_event('user.lifecycle.deactivate', 'bob@corp.example', 'a'),
                               okta_event('user.session.start', 'x@corp.example', 'b'),
                               okta_event('user.lifecycle.suspend', 'Alice@corp.example', 'c')))
    out = event['sessionguard']
    assert out['users'] == ['bob', 'Alice'] and out['users_text'] == 'bob\nAlice'
    assert out['action'] == 'deactivated/suspended' and out['id'] == 'a,c'


def test_idp_filter_reads_a_generic_body_and_maps_users():
    event = idp_user.main({'payload': {'event': 'user.suspended', 'user': 'robert.smith@corp.example', 'id': 'e1'}},
                          user_map={'robert.smith@corp.example': 'bob'})
    assert event['sessionguard']['users'] == ['bob'] and event['sessionguard']['id'] == 'e1'


@pytest.mark.parametrize('payload', [
    {'event': 'user.created', 'user': 'bob'},
    {'event': 'user.suspended'},
    {'data': {'events': [okta_event('user.session.start', 'bob@corp.example')]}},
    'not a dict',
])
def test_idp_filter_leaves_other_events_alone(payload):
    assert 'sessionguard' not in idp_user.main({'payload': payload})

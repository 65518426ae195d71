"""pytest fixtures for live tests: real users, a real sshd, real mosh sessions.

The library lives in tests/lib/sgtest; these fixtures only wire it to pytest
scopes. Nothing here skips: if something the harness needs is missing, the
fixture raises and the test errors.

Session scope
    ``sg_harness``  the :class:`sgtest.Harness` (state dir under /tmp, preflight, host prep)
    ``sshd``        the test :class:`sgtest.Sshd` on 127.0.0.1 (``.address``, ``.port``, ``.run``)

Function scope (everything torn down and verified after each test)
    ``user_factory(prefix=None, shell="/bin/bash", authorize=True) -> TestUser``
    ``mosh_session_factory(user, command=None, server=None, mosh_args=(), wait=True,
                           timeout=30) -> MoshSession``
    ``ssh_session_factory(user, command=None, wait=True, timeout=30) -> SshSession``
    ``bystander`` a :class:`sgtest.Bystander` (own user, mosh session, nohup job)

Module scope variants: ``module_user_factory``, ``module_mosh_session_factory``,
``module_ssh_session_factory``, ``module_bystander``.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

import sgtest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "live: needs root, real users, sshd and mosh (tests/live)")


@pytest.fixture(scope="session")
def sg_harness():
    harness = sgtest.Harness()
    try:
        harness.start()
    except Exception:
        harness.finish()
        raise
    yield harness
    harness.finish()


@pytest.fixture(scope="session")
def sshd(sg_harness) -> sgtest.Sshd:
    return sg_harness.sshd


@pytest.fixture
def sg_scope(sg_harness, request):
    scope = sg_harness.scope(request.node.name)
    yield scope
    scope.cleanup()


@pytest.fixture(scope="module")
def sg_module_scope(sg_harness, request):
    scope = sg_harness.scope(request.module.__name__)
    yield scope
    scope.cleanup()


@pytest.fixture
def user_factory(sg_scope):
    return sg_scope.user


@pytest.fixture
def mosh_session_factory(sg_scope):
    return sg_scope.mosh


@pytest.fixture
def ssh_session_factory(sg_scope):
    return sg_scope.ssh


@pytest.fixture
def bystander(sg_scope) -> sgtest.Bystander:
    return sg_scope.bystander()


@pytest.fixture(scope="module")
def module_user_factory(sg_module_scope):
    return sg_module_scope.user


@pytest.fixture(scope="module")
def module_mosh_session_factory(sg_module_scope):
    return sg_module_scope.mosh


@pytest.fixture(scope="module")
def module_ssh_session_factory(sg_module_scope):
    return sg_module_scope.ssh


@pytest.fixture(scope="module")
def module_bystander(sg_module_scope) -> sgtest.Bystander:
    return sg_module_scope.bystander()

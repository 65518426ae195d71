"""pytest fixtures for the live tests: real users, real sshd logins, real mosh sessions, real Ansible runs.

The library is tests/lib/sgtest (tests/README.md); these fixtures only wire it to pytest scopes.
Nothing here skips: if something the harness needs is missing, the fixture raises and the test errors.

The factories work on ``sg_fleet``: the machine itself (``sg_harness``, a fleet of one host) here,
the fleet of namespaced hosts in tests/fleet (its conftest.py overrides ``sg_fleet``).

Session scope
    ``sg_harness``  the :class:`sgtest.Harness` (state dir under /tmp, preflight, the test sshd)
    ``sshd``        its :class:`sgtest.Sshd` on 127.0.0.1 (``.address``, ``.port``, ``.run``)
    ``sg_fleet``    the hosts the factories below create users and sessions on

Function scope (everything torn down and verified after each test; ``sg_scope`` is the
:class:`sgtest.Scope` behind the factories)
    ``user_factory(name=None, hosts=None, *, prefix=None, shell="/bin/bash", authorize=True) -> TestUser``
    ``mosh_session_factory(user, host=None, *, command=None, server=None, mosh_args=(), wait=True,
                           timeout=30, sshd=None) -> MoshSession``
    ``ssh_session_factory(user, host=None, *, command=None, wait=True, timeout=30, sshd=None) -> SshSession``
    ``bystander_factory(host=None, prefix="sgb") -> Bystander`` and ``bystander``, one made on the only host:
    another user with a live mosh session and a nohup job, which a test must leave untouched

Module scope (``sg_module_scope``): ``module_user_factory``, ``module_bystander``.

Modules run through ansible-playbook on this machine: ``target`` (every target interpreter in turn:
psutil, psutil blocked, Python 3.9, Python 3.13) and ``default_target``.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

import sgtest  # noqa: E402  pylint: disable=wrong-import-position
from sgtest.ansible import TARGETS, Target  # noqa: E402  pylint: disable=wrong-import-position


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


@pytest.fixture(scope="session")
def sg_fleet(sg_harness) -> sgtest.BaseFleet:
    return sg_harness


@pytest.fixture
def sg_scope(sg_fleet, request):
    scope = sg_fleet.scope(request.node.name)
    yield scope
    scope.cleanup()


@pytest.fixture(scope="module")
def sg_module_scope(sg_fleet, request):
    scope = sg_fleet.scope(request.module.__name__)
    yield scope
    scope.cleanup()


def _of_scope(name: str, member: str, scope: str = "function", made: bool = False):
    """A fixture giving ``member`` of the test's (or module's) :class:`sgtest.Scope`; with ``made``,
    what calling it makes."""
    scope_fixture = "sg_scope" if scope == "function" else "sg_module_scope"

    def fixture(request):
        got = getattr(request.getfixturevalue(scope_fixture), member)
        return got() if made else got

    fixture.__name__ = fixture.__qualname__ = name
    fixture.__doc__ = f"``{scope_fixture}.{member}{'()' if made else ''}``"
    return pytest.fixture(scope=scope, name=name)(fixture)


user_factory = _of_scope("user_factory", "user")
mosh_session_factory = _of_scope("mosh_session_factory", "mosh")
ssh_session_factory = _of_scope("ssh_session_factory", "ssh")
bystander_factory = _of_scope("bystander_factory", "bystander")
bystander = _of_scope("bystander", "bystander", made=True)
module_user_factory = _of_scope("module_user_factory", "user", "module")
module_mosh_session_factory = _of_scope("module_mosh_session_factory", "mosh", "module")
module_bystander = _of_scope("module_bystander", "bystander", "module", made=True)


@pytest.fixture(params=sorted(TARGETS))
def target(request) -> Target:
    """Every module test runs once per target interpreter: psutil, psutil blocked, Python 3.9, Python 3.13."""
    return Target(request.param)


@pytest.fixture
def default_target() -> Target:
    return Target("py311-psutil")

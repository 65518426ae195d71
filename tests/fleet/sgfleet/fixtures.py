"""pytest fixtures for tests on the fleet. Import them into a conftest.py::

    sys.path.insert(0, "<repo>/tests/fleet")
    from sgfleet.fixtures import *  # noqa: F401,F403

Session scope
    ``fleet``            a :class:`sgfleet.Fleet` of ``$SG_FLEET_HOSTS`` (default 4) hosts, one of
                         each profile, on the lowest free block of loopback addresses; brought
                         down at the end and verified (teardown errors if anything is left)
    ``fleet_inventory``  path of its Ansible inventory (YAML)

Function scope (torn down and verified after each test)
    ``fleet_scope``                 the :class:`sgfleet.FleetScope` behind the factories
    ``fleet_user_factory(name=None, hosts=None, *, prefix="sgf", shell="/bin/bash", authorize=True)``
                                    -> :class:`sgfleet.FleetUser` (``user.on(host)`` -> sgtest.TestUser)
    ``fleet_mosh_factory(user, host=None, *, command=None, server=None, mosh_args=(), wait=True,
                         timeout=30)`` -> connected :class:`sgtest.MoshSession`
    ``fleet_ssh_factory(user, host=None, *, command=None, wait=True, timeout=30)``
                                    -> connected :class:`sgtest.SshSession`
    ``fleet_bystander_factory(host, prefix="sgb")`` -> :class:`sgtest.Bystander` on that host

Module scope: ``fleet_module_scope`` (and the same factories through it).
"""

from __future__ import annotations

import os

import pytest

from .fleet import Fleet, new_state_dir, purge_stale_fleets

__all__ = ["fleet", "fleet_bystander_factory", "fleet_inventory", "fleet_module_scope", "fleet_mosh_factory",
           "fleet_scope", "fleet_ssh_factory", "fleet_user_factory"]


@pytest.fixture(scope="session")
def fleet():
    purge_stale_fleets()
    f = Fleet(new_state_dir("pt"), kind="pytest")
    try:
        f.up(int(os.environ.get("SG_FLEET_HOSTS", "4")), first=None)
    except BaseException:
        f.down(check=False)
        raise
    yield f
    f.down()


@pytest.fixture(scope="session")
def fleet_inventory(fleet) -> str:
    return fleet.inventory_path


@pytest.fixture
def fleet_scope(fleet, request):
    scope = fleet.scope(request.node.name)
    yield scope
    scope.cleanup()


@pytest.fixture(scope="module")
def fleet_module_scope(fleet, request):
    scope = fleet.scope(request.module.__name__)
    yield scope
    scope.cleanup()


@pytest.fixture
def fleet_user_factory(fleet_scope):
    return fleet_scope.user


@pytest.fixture
def fleet_mosh_factory(fleet_scope):
    return fleet_scope.mosh


@pytest.fixture
def fleet_ssh_factory(fleet_scope):
    return fleet_scope.ssh


@pytest.fixture
def fleet_bystander_factory(fleet_scope):
    return fleet_scope.bystander

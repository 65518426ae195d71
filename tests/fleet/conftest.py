"""The fleet of namespaced hosts (tests/fleet/README.md) as the hosts of the shared fixtures.

``fleet`` (session): a :class:`sgtest.fleet.Fleet` of ``$SG_FLEET_HOSTS`` (default 4) hosts, one of
each profile, on the lowest free block of loopback addresses; brought down at the end and verified
(teardown errors if anything is left). Fleets of crashed earlier runs are purged first.

It overrides ``sg_fleet``, so ``user_factory``, ``mosh_session_factory``, ``ssh_session_factory``,
``bystander_factory`` and ``sg_scope`` (tests/conftest.py) work on the fleet's hosts here:
``user_factory(hosts=[...])`` makes the user on those hosts only, and a session or bystander names
its host (``mosh_session_factory(user, host)``).
"""

from __future__ import annotations

import os

import pytest

from sgtest.fleet import fleet_of, purge_stale_fleets


@pytest.fixture(scope="session")
def fleet():
    purge_stale_fleets()
    yield from fleet_of(int(os.environ.get("SG_FLEET_HOSTS", "4")))


@pytest.fixture(scope="session")
def sg_fleet(fleet):
    return fleet

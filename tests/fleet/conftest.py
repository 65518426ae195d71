"""Fixtures for tests on the fleet of namespaced hosts (tests/fleet/README.md).

The fixtures live in sgfleet.fixtures so that other test directories can import them too.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sgfleet.fixtures import *  # noqa: E402,F401,F403  pylint: disable=wrong-import-position,wildcard-import,unused-wildcard-import


def pytest_configure(config):
    config.addinivalue_line("markers", "fleet: needs root; brings up namespaced sshd hosts (tests/fleet)")

# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest


@pytest.fixture
def fakeproc(tmp_path):
    """An empty fake procfs (see fakeproc.py), on tmpfs when there is one."""
    # Imported here, not at the top: pytest loads this conftest before pytest-ansible makes
    # ansible_collections importable whenever this directory is named on the command line.
    from ansible_collections.sessionguard.mosh.tests.unit.plugins.module_utils.fakeproc import FakeProcfs, scratch
    with scratch(tmp_path) as base:
        yield FakeProcfs(base)

"""Fixtures for tests that run the collection's modules through real Ansible runs."""

from __future__ import annotations

import pytest

import sgansible


@pytest.fixture(params=sorted(sgansible.TARGETS))
def target(request):
    """Every module test runs once per target interpreter: psutil, psutil blocked, Python 3.9, Python 3.13."""
    return sgansible.Target(request.param)


@pytest.fixture
def default_target():
    return sgansible.Target('py311-psutil')

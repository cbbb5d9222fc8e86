"""Fixtures shared by every test: the real local stack started by `scripts/devstack.py up`."""

import httpx
import pytest

from tests.support import GATEWAY, random_ip


@pytest.fixture
async def gateway():
    """A client of the gateway with a client address of its own, so per-IP limits (nginx's and
    the services') apply per test, as they would per user."""
    headers = {"X-Forwarded-For": random_ip()}
    async with httpx.AsyncClient(base_url=GATEWAY, timeout=10, headers=headers) as client:
        yield client

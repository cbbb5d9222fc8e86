"""Fixtures shared by every test: the real local stack started by `scripts/devstack.py up`."""

import httpx
import pytest

from tests.support import GATEWAY


@pytest.fixture
async def gateway():
    async with httpx.AsyncClient(base_url=GATEWAY, timeout=10) as client:
        yield client

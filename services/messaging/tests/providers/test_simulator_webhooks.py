"""The simulator's webhooks: batched delivery reports (one signed JSON list per request, a
message's reports in order) and inbound messages a test or a developer "texts" through
`/_sim/inbound`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
from messaging.providers.base import DeliveryStatus


async def items_of(receiver, provider: str, ids: set[str], count: int, timeout: float = 15.0):  # noqa: ANN001, ANN201
    """The requests to `provider`'s URL carrying items about `ids`, once `count` such items arrived."""
    deadline = time.monotonic() + timeout
    while True:
        requests = [r for r in list(receiver.requests) if r.path.endswith(f"/{provider}")]
        found = [(r, item) for r in requests for item in _items(r.body) if item.get("id") in ids]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{len(found)} of {count} items arrived"
            return requests, found
        await asyncio.sleep(0.05)


def _items(body: bytes) -> list[dict]:
    """The items of a webhook body; none for a body cut short (a post the simulator gave up on
    under load, then retried whole)."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    return data if isinstance(data, list) else [data]


async def test_reports_due_together_go_out_as_one_signed_list_in_order(sim_batch, receiver, new_phone):
    provider = sim_batch.provider("sim-batch")
    results = await asyncio.gather(*(provider.send(new_phone(), "bulk", str(uuid.uuid4())) for _ in range(300)))
    ids = {r.provider_message_id for r in results}
    requests, found = await items_of(receiver, "sim-batch", ids, 600)
    carrying = [r for r in requests if ids & {i.get("id") for i in _items(r.body)}]
    assert len(carrying) < 60, f"{len(carrying)} requests for 600 reports: not batched"
    url = receiver.url("sim-batch")
    order: dict[str, list[DeliveryStatus]] = {}
    for request in carrying:
        assert request.body.startswith(b"[")
        assert provider.verify_webhook(url, request.headers, request.body)
        reports, inbound = provider.parse_webhook(request.body)
        assert inbound == [] and len(reports) <= 500
        for report in reports:
            order.setdefault(report.provider_message_id, []).append(report.status)
    assert set(order) == ids
    assert all(statuses == [DeliveryStatus.SENT, DeliveryStatus.DELIVERED] for statuses in order.values())
    stats = await sim_batch.stats()
    assert stats["webhookItems"] >= 600 and stats["webhookFailures"] == 0
    await provider.aclose()


async def test_an_inbound_message_is_posted_as_a_signed_webhook(sim_a, sim_batch, receiver, new_phone):
    for sim, name in ((sim_a, "sim-a"), (sim_batch, "sim-batch")):
        sender = new_phone()
        async with httpx.AsyncClient(base_url=sim.url, timeout=5) as client:
            r = await client.post("/_sim/inbound", json={"from": sender, "to": "+18005550100", "text": "STOP"})
            assert r.status_code == 202, r.text
            inbound_id = r.json()["id"]
            bad = await client.post("/_sim/inbound", json={"from": "nope", "to": "+18005550100", "text": "x"})
            assert bad.status_code == 400
        _, [(request, item)] = await items_of(receiver, name, {inbound_id}, 1)
        provider = sim.provider(name)
        assert provider.verify_webhook(receiver.url(name), request.headers, request.body)
        reports, [sms] = provider.parse_webhook(request.body)
        assert reports == []
        assert (sms.provider_message_id, sms.from_number, sms.to_number, sms.text) == (
            inbound_id, sender, "+18005550100", "STOP"
        )
        assert sms.received_at is not None
        async with httpx.AsyncClient(base_url=sim.url, timeout=5) as client:
            await asyncio.sleep(0.1)
            [logged] = [m for m in (await client.get("/_sim/inbound")).json() if m["id"] == inbound_id]
            assert logged["webhook"]["ok"] is True
        await provider.aclose()

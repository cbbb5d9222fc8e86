"""Card top-ups through the gateway against localstripe (the Stripe fake the local stack runs on
127.0.0.1:8420): a PaymentIntent per top-up, confirmed with a test card, credited by the signed
webhook exactly once whatever the redeliveries and their order; refunds and disputes reverse
it, a reversal the balance cannot cover leaves a receivable; tenants never see each other's."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import stripe

from tests.support import (
    SECRETS,
    WEBHOOK,
    credits,
    key,
    new_tenant,
    pay_with_test_card,
    stripe_client,
    superuser,
    topup,
    wait_balance,
)


async def movements(gateway, headers) -> list[dict]:  # noqa: ANN001
    r = await gateway.get("/api/v1/payments/history", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]["items"]


def signed(event: dict, secret: str = SECRETS[0], timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


async def deliver(gateway, event: dict, **sign) -> dict:  # noqa: ANN001
    body, headers = signed(event, **sign)
    r = await gateway.post(WEBHOOK, content=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def stripe_event(event_type: str, obj: dict) -> dict:
    return {"id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "type": event_type, "api_version": "2024-06-20",
            "created": int(time.time()), "livemode": False, "data": {"object": obj}}


def intent_object(topped: dict, status: str = "succeeded") -> dict:
    return {"id": topped["paymentIntentId"], "object": "payment_intent", "amount": topped["amount"],
            "amount_received": topped["amount"], "currency": "usd", "status": status,
            "latest_charge": f"ch_{topped['paymentIntentId'][3:]}", "metadata": {"payment_id": topped["paymentId"]}}


def charge_object(topped: dict, refunded: int = 0) -> dict:
    return {"id": f"ch_{topped['paymentIntentId'][3:]}", "object": "charge", "amount": topped["amount"],
            "amount_refunded": refunded, "refunded": refunded >= topped["amount"], "captured": True, "paid": True,
            "status": "succeeded", "currency": "usd", "payment_intent": topped["paymentIntentId"], "metadata": {}}


def dispute_object(topped: dict, dispute_id: str, amount: int, status: str) -> dict:
    return {"id": dispute_id, "object": "dispute", "amount": amount, "currency": "usd", "status": status,
            "charge": f"ch_{topped['paymentIntentId'][3:]}", "payment_intent": topped["paymentIntentId"]}


async def stored_event(event_id: str):  # noqa: ANN201
    async with superuser() as conn:
        return await conn.fetchrow("SELECT type, processed_at, error FROM billing.stripe_events WHERE id = $1", event_id)


async def receivable_of(headers_tenant: str) -> int:
    """What the tenant owes the platform (the receivables account's entries for its movements)."""
    async with superuser() as conn:
        posted = await conn.fetchval(
            "SELECT coalesce(sum(e.amount_minor), 0) FROM billing.ledger_entries e "
            "JOIN billing.ledger_transactions t ON t.id = e.transaction_id "
            "JOIN billing.accounts a ON a.id = e.account_id "
            "WHERE a.code = 'receivables' AND t.tenant_id = $1", headers_tenant)
        return -int(posted)


async def tenant_of(payment_id: str) -> str:
    async with superuser() as conn:
        return await conn.fetchval("SELECT tenant_id FROM billing.payments WHERE id = $1", uuid.UUID(payment_id))


# -- the happy path ----------------------------------------------------------------------------


async def test_a_card_top_up_credits_the_balance_when_stripe_confirms_it(gateway):
    headers = await new_tenant(gateway)
    topped = await topup(gateway, headers, 2_500)
    assert topped["amount"] == 2_500 and topped["currency"] == "USD"
    assert topped["paymentIntentId"].startswith("pi_") and topped["clientSecret"].startswith(topped["paymentIntentId"])
    assert (await credits(gateway, headers))["balance"] == 0  # nothing moves before Stripe says so

    await pay_with_test_card(topped["paymentIntentId"])  # localstripe then posts the signed webhook
    assert (await wait_balance(gateway, headers, 2_500))["available"] == 2_500
    [movement] = await movements(gateway, headers)
    assert (movement["kind"], movement["amount"], movement["reference"]) == ("topup", 2_500, topped["paymentIntentId"])

    r = await gateway.get(f"/api/v1/payments/topups/{topped['paymentId']}", headers=headers)
    assert r.status_code == 200
    assert {k: r.json()["data"][k] for k in ("status", "succeeded", "credited")} == {
        "status": "succeeded", "succeeded": True, "credited": 2_500}

    # Seed 001's name for the same thing.
    deposit = await topup(gateway, headers, 1_000, path="deposit")
    assert deposit["paymentId"] != topped["paymentId"] and deposit["status"] == "requires_payment_method"


async def test_top_up_input_is_checked_and_needs_an_idempotency_key(gateway):
    headers = await new_tenant(gateway)
    for body in ({"amount": 99}, {"amount": 1_000_000_01}, {"amount": "2000"}, {"amount": True},
                 {"amount": 2_000, "tenantId": "x"}, {"amount": 2_000, "currency": "EURO"}):
        r = await gateway.post("/api/v1/payments/topup", json=body, headers={**headers, **key()})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["success"] is False
    r = await gateway.post("/api/v1/payments/topup", json={"amount": 2_000, "currency": "EUR"}, headers={**headers, **key()})
    assert (r.status_code, r.json()["code"]) == (422, "CURRENCY_MISMATCH")
    r = await gateway.post("/api/v1/payments/topup", json={"amount": 2_000}, headers=headers)
    assert r.status_code == 422  # no Idempotency-Key
    r = await gateway.post("/api/v1/payments/topup", json={"amount": 2_000}, headers=key())
    assert r.status_code == 401
    listed = (await gateway.get("/api/v1/payments/topups", headers=headers)).json()["data"]
    assert listed["total"] == 0


async def test_the_same_idempotency_key_replays_and_refuses_another_body(gateway):
    headers = await new_tenant(gateway)
    same = {**headers, **key()}
    first = await gateway.post("/api/v1/payments/topup", json={"amount": 3_000}, headers=same)
    again = await gateway.post("/api/v1/payments/topup", json={"amount": 3_000, "currency": "usd"}, headers=same)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()  # the first answer, same paymentId and clientSecret
    other = await gateway.post("/api/v1/payments/topup", json={"amount": 4_000}, headers=same)
    assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    listed = (await gateway.get("/api/v1/payments/topups", headers=headers)).json()["data"]
    assert listed["total"] == 1 and listed["items"][0]["amount"] == 3_000


# -- the webhook ---------------------------------------------------------------------------------


async def test_a_webhook_delivered_five_times_credits_once(gateway):
    headers = await new_tenant(gateway)
    topped = await topup(gateway, headers, 1_700)
    await pay_with_test_card(topped["paymentIntentId"])
    # The very event localstripe sends (it delivers it once more itself, about now).
    events = await stripe_client().v1.events.list_async(
        {"type": "payment_intent.succeeded", "created": {"gte": int(time.time()) - 60}, "limit": 100})
    [event] = [e.to_dict() for e in events.data if e.data.object.id == topped["paymentIntentId"]]
    body, signature = signed(event)
    answers = await asyncio.gather(*(gateway.post(WEBHOOK, content=body, headers=signature) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert sum(not a.json()["data"]["duplicate"] for a in answers) <= 1
    await wait_balance(gateway, headers, 1_700)
    await asyncio.sleep(1.5)  # localstripe's own delivery has landed by now too
    assert (await credits(gateway, headers))["balance"] == 1_700
    assert [m["amount"] for m in await movements(gateway, headers)] == [1_700]
    assert (await stored_event(event["id"]))["processed_at"] is not None


async def test_signatures_are_checked_before_anything_is_stored(gateway):
    event = stripe_event("customer.created", {"id": f"cus_{uuid.uuid4().hex[:14]}", "object": "customer"})
    body, good = signed(event)
    cases = {
        "wrong secret": signed(event, secret="whsec_not_ours")[1],
        "tampered": {**good, "Stripe-Signature": good["Stripe-Signature"][:-4] + "0000"},
        "missing": {"Content-Type": "application/json"},
        "301 s old": signed(event, timestamp=int(time.time()) - 301)[1],
        "garbage": {"Stripe-Signature": "t=abc,v1=zz"},
    }
    for name, headers in cases.items():
        r = await gateway.post(WEBHOOK, content=body, headers=headers)
        assert r.status_code == 400, (name, r.text)
        assert r.json()["success"] is False and r.json()["code"] in ("INVALID_SIGNATURE", "SIGNATURE_EXPIRED"), name
    assert (await gateway.post(WEBHOOK, content=body, headers=cases["301 s old"])).json()["code"] == "SIGNATURE_EXPIRED"
    assert await stored_event(event["id"]) is None

    # The rotation secret works; a type billing does not act on is stored, processed, 200.
    answer = await deliver(gateway, event, secret=SECRETS[1])
    assert answer == {"received": True, "eventId": event["id"], "duplicate": False}
    stored = await stored_event(event["id"])
    assert stored["type"] == "customer.created" and stored["processed_at"] is not None and stored["error"] is None
    assert (await deliver(gateway, event))["duplicate"] is True


async def test_a_refund_reverses_the_credit(gateway):
    headers = await new_tenant(gateway)
    topped = await topup(gateway, headers, 5_000)
    await pay_with_test_card(topped["paymentIntentId"])
    await wait_balance(gateway, headers, 5_000)

    client = stripe_client()
    await client.v1.refunds.create_async({"payment_intent": topped["paymentIntentId"], "amount": 1_200})
    intent = await client.v1.payment_intents.retrieve_async(topped["paymentIntentId"])
    charge = (await client.v1.charges.retrieve_async(intent.latest_charge.id)).to_dict()
    assert charge["amount_refunded"] == 1_200
    refunded = stripe_event("charge.refunded", charge)
    await deliver(gateway, refunded)
    await deliver(gateway, refunded)  # a redelivery changes nothing
    assert (await credits(gateway, headers))["balance"] == 3_800

    await client.v1.refunds.create_async({"payment_intent": topped["paymentIntentId"], "amount": 3_800})  # the rest
    charge = (await client.v1.charges.retrieve_async(intent.latest_charge.id)).to_dict()
    await deliver(gateway, stripe_event("charge.refunded", charge))
    assert (await credits(gateway, headers))["balance"] == 0
    assert [(m["kind"], m["amount"]) for m in await movements(gateway, headers)] == [
        ("refund", -3_800), ("refund", -1_200), ("topup", 5_000)]
    r = await gateway.get(f"/api/v1/payments/topups/{topped['paymentId']}", headers=headers)
    assert {k: r.json()["data"][k] for k in ("status", "refunded", "credited")} == {
        "status": "refunded", "refunded": 5_000, "credited": 0}


async def test_events_out_of_order_end_at_the_right_balance(gateway):
    headers = await new_tenant(gateway)
    topped = await topup(gateway, headers, 4_000)
    refund = stripe_event("charge.refunded", charge_object(topped, refunded=1_500))
    succeeded = stripe_event("payment_intent.succeeded", intent_object(topped))
    charge_ok = stripe_event("charge.succeeded", charge_object(topped))
    # The refund arrives first: it proves the charge was paid, so the balance is already net.
    await deliver(gateway, refund)
    assert (await credits(gateway, headers))["balance"] == 2_500
    await deliver(gateway, succeeded)
    await deliver(gateway, charge_ok)  # an older view of the charge (nothing refunded yet)
    assert (await credits(gateway, headers))["balance"] == 2_500
    assert [(m["kind"], m["amount"]) for m in await movements(gateway, headers)] == [("topup", 2_500)]


async def test_a_dispute_bigger_than_the_balance_leaves_a_receivable_and_winning_it_repays_it(gateway):
    headers = await new_tenant(gateway)
    topped = await topup(gateway, headers, 1_000)
    tenant = await tenant_of(topped["paymentId"])
    await deliver(gateway, stripe_event("payment_intent.succeeded", intent_object(topped)))
    await deliver(gateway, stripe_event("charge.refunded", charge_object(topped, refunded=400)))
    assert (await credits(gateway, headers))["balance"] == 600

    # The cardholder disputes the whole charge anyway: Stripe takes 1,000 more; 600 is there.
    dispute_id = f"dp_{uuid.uuid4().hex[:20]}"
    await deliver(gateway, stripe_event("charge.dispute.created", dispute_object(topped, dispute_id, 1_000, "needs_response")))
    await deliver(gateway, stripe_event("charge.dispute.funds_withdrawn", dispute_object(topped, dispute_id, 1_000, "needs_response")))
    after = await credits(gateway, headers)
    assert (after["balance"], after["available"]) == (0, 0)
    assert await receivable_of(tenant) == 400
    assert (await movements(gateway, headers))[0] | {"id": 0, "transactionId": "", "createdAt": "", "description": ""} == {
        "id": 0, "transactionId": "", "createdAt": "", "description": "", "kind": "dispute", "amount": -600,
        "balanceAfter": 0, "reference": topped["paymentIntentId"]}

    # Won: the money comes back, the receivable is repaid first, the customer gets the rest.
    await deliver(gateway, stripe_event("charge.dispute.closed", dispute_object(topped, dispute_id, 1_000, "won")))
    assert (await credits(gateway, headers))["balance"] == 600
    assert await receivable_of(tenant) == 0
    # A late copy of the opening event cannot take it again.
    await deliver(gateway, stripe_event("charge.dispute.created", dispute_object(topped, dispute_id, 1_000, "needs_response")))
    assert (await credits(gateway, headers))["balance"] == 600


# -- tenants -------------------------------------------------------------------------------------


async def test_tenants_never_see_or_move_each_others_payments(gateway):
    alice, bob = await new_tenant(gateway), await new_tenant(gateway)
    shared_key = key()
    mine = await gateway.post("/api/v1/payments/topup", json={"amount": 2_000}, headers={**alice, **shared_key})
    theirs = await gateway.post("/api/v1/payments/topup", json={"amount": 2_000}, headers={**bob, **shared_key})
    assert mine.status_code == theirs.status_code == 201
    a, b = mine.json()["data"], theirs.json()["data"]
    assert a["paymentId"] != b["paymentId"]  # idempotency keys are per tenant

    r = await gateway.get(f"/api/v1/payments/topups/{a['paymentId']}", headers=bob)
    assert (r.status_code, r.json()["code"]) == (404, "PAYMENT_NOT_FOUND")
    bobs = (await gateway.get("/api/v1/payments/topups", headers=bob)).json()["data"]["items"]
    assert [p["paymentId"] for p in bobs] == [b["paymentId"]]

    # An event naming Bob's tenant on Alice's payment moves nothing for anyone.
    forged = intent_object(a) | {"metadata": {"payment_id": a["paymentId"], "tenant_id": await tenant_of(b["paymentId"])}}
    event = stripe_event("payment_intent.succeeded", forged)
    await deliver(gateway, event)
    assert (await stored_event(event["id"]))["error"] == "tenant in metadata does not match the payment"

    await deliver(gateway, stripe_event("payment_intent.succeeded", intent_object(a)))
    assert (await credits(gateway, alice))["balance"] == 2_000
    assert (await credits(gateway, bob))["balance"] == 0
    assert await movements(gateway, bob) == []

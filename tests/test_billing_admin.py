"""Withdrawals and pricing as tenants and platform admins meet them, through the gateway: a
withdrawal is held, then paid out (refunded to the tenant's card payments on localstripe, or by
hand) or released by an admin; admins price SMS and number orders, by hand or fed by the
provider catalogue event."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from common.messaging.kafka import make_producer
from common.settings import BaseServiceSettings

from tests.support import GATEWAY, EventTap, random_ip, superuser
from tests.test_billing_payments import (
    deliver,
    pay_with_test_card,
    stripe_client,
    stripe_event,
    topup,
    wait_balance,
)

PASSWORD = "correct horse battery"
# Territories no other test prices, so a country-wide rule here changes nobody else's price.
QUIET_COUNTRIES = ["FO", "GL", "AX", "GI", "IM", "JE", "GG", "SM", "LI", "MC", "AD", "KN", "LC", "VC", "DM"]


def bearer(user: dict) -> dict[str, str]:
    return {"authorization": f"Bearer {user['accessToken']}"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4().hex}"}


async def register(gateway: httpx.AsyncClient) -> dict:
    email = f"b{uuid.uuid4().hex[:12]}@example.com"
    r = await gateway.post(
        "/api/v1/users/register",
        json={"email": email, "password": PASSWORD, "name": "Bill Payer", "tenantName": "Payers"},
    )
    assert r.status_code == 201, r.text
    return {**r.json()["data"], "email": email}


async def relogin(gateway: httpx.AsyncClient, user: dict, sql: str) -> dict:
    """Change the user in auth's tables, then log in again so the token carries it."""
    async with superuser() as conn:
        await conn.execute(sql, user["email"])
    r = await gateway.post("/api/v1/users/login", json={"email": user["email"], "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {**r.json()["data"], "email": user["email"]}


async def credits(gateway: httpx.AsyncClient, user: dict, timeout: float = 20) -> dict:
    """The balance, waiting for the account that the registration event opens."""
    deadline = time.monotonic() + timeout
    while True:
        r = await gateway.get("/api/v1/users/credits", headers=bearer(user))
        if r.status_code == 200:
            return r.json()["data"]
        assert r.status_code == 404 and time.monotonic() < deadline, r.text
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def admin():
    async with httpx.AsyncClient(base_url=GATEWAY, timeout=10, headers={"X-Forwarded-For": random_ip()}) as client:
        user = await register(client)
        yield await relogin(client, user, "UPDATE auth.users SET is_platform_admin = true WHERE email = $1")


async def owner_with(gateway: httpx.AsyncClient, admin: dict, amount: int) -> dict:
    owner = await register(gateway)
    await credits(gateway, owner)
    if amount:
        r = await gateway.post(
            "/api/v1/admin/payments/adjustments",
            json={"tenantId": owner["user"]["tenantId"], "amount": amount, "reason": "test funds"},
            headers={**bearer(admin), **key()},
        )
        assert r.status_code == 201, r.text
    return owner


async def withdraw(gateway: httpx.AsyncClient, user: dict, amount: int, **extra) -> httpx.Response:  # noqa: ANN003
    return await gateway.post(
        "/api/v1/payments/withdraw", json={"amount": amount, **extra}, headers={**bearer(user), **key()}
    )


def approve_path(withdrawal_id: str, action: str = "approve") -> str:
    return f"/api/v1/admin/payments/withdrawals/{withdrawal_id}/{action}"


# -- withdrawals -------------------------------------------------------------------------------


async def test_a_withdrawal_is_held_then_paid_out_once_and_shows_in_history(gateway, admin):
    owner = await owner_with(gateway, admin, 5_000)
    r = await withdraw(gateway, owner, 2_000, note="to my bank")
    assert r.status_code == 201, r.text
    withdrawal = r.json()["data"]
    assert (withdrawal["status"], withdrawal["amount"], withdrawal["note"]) == ("requested", 2_000, "to my bank")
    assert await credits(gateway, owner) == {"balance": 5_000, "held": 2_000, "available": 3_000, "currency": "USD"}

    mine = (await gateway.get("/api/v1/payments/withdrawals", headers=bearer(owner))).json()["data"]
    assert [w["id"] for w in mine["items"]] == [withdrawal["id"]] and mine["total"] == 1
    queue = await gateway.get(
        "/api/v1/admin/payments/withdrawals",
        params={"status": "requested", "tenantId": owner["user"]["tenantId"]}, headers=bearer(admin),
    )
    assert [w["id"] for w in queue.json()["data"]["items"]] == [withdrawal["id"]]

    r = await gateway.post(approve_path(withdrawal["id"]), headers=bearer(admin))
    assert r.status_code == 200, r.text
    paid = r.json()["data"]
    # Only manually credited money (no card payment to refund): paid by hand.
    assert (paid["status"], paid["payoutMethod"], paid["decidedBy"]) == ("paid", "manual", admin["user"]["id"])
    assert paid["payoutReference"].startswith("MAN-") and paid["decidedAt"]
    assert (paid["payoutRefunded"], paid["payoutManual"]) == (0, 2_000)
    assert await credits(gateway, owner) == {"balance": 3_000, "held": 0, "available": 3_000, "currency": "USD"}
    history = (await gateway.get("/api/v1/payments/history", headers=bearer(owner))).json()["data"]["items"]
    assert [(m["kind"], m["amount"], m["balanceAfter"]) for m in history][:1] == [("withdrawal", -2_000, 3_000)]

    again = await gateway.post(approve_path(withdrawal["id"]), headers=bearer(admin))
    assert again.status_code == 409 and again.json()["code"] == "WITHDRAWAL_ALREADY_DECIDED"
    late_reject = await gateway.post(approve_path(withdrawal["id"], "reject"), json={"reason": "too late"}, headers=bearer(admin))
    assert late_reject.status_code == 409
    assert (await credits(gateway, owner))["balance"] == 3_000


async def test_a_withdrawal_is_refunded_to_the_card_and_stripes_report_of_that_refund_debits_nothing(gateway, admin):
    owner = await owner_with(gateway, admin, 0)
    headers = bearer(owner)
    async with EventTap("billing.payment") as payment_events, EventTap("billing.withdrawal") as withdrawal_events:
        topped = await topup(gateway, headers, 1_000)
        intent = topped["paymentIntentId"]
        await pay_with_test_card(intent)  # localstripe posts payment_intent.succeeded
        await wait_balance(gateway, headers, 1_000)

        withdrawal = (await withdraw(gateway, owner, 400)).json()["data"]
        r = await gateway.post(approve_path(withdrawal["id"]), headers=bearer(admin))
        assert r.status_code == 200, r.text
        paid = r.json()["data"]
        assert (paid["status"], paid["payoutMethod"], paid["payoutRefunded"], paid["payoutManual"]) == (
            "paid", "stripe_refund", 400, 0)
        client = stripe_client()
        [refund] = (await client.v1.refunds.list_async({"payment_intent": intent})).data
        assert (refund.id, refund.amount, refund.status) == (paid["payoutReference"], 400, "succeeded")
        assert (refund.metadata["withdrawal_id"], refund.metadata["kind"]) == (withdrawal["id"], "payout")
        assert await credits(gateway, owner) == {"balance": 600, "held": 0, "available": 600, "currency": "USD"}
        history = (await gateway.get("/api/v1/payments/history", headers=headers)).json()["data"]["items"]
        assert [(m["kind"], m["amount"], m["balanceAfter"]) for m in history] == [
            ("withdrawal", -400, 600), ("topup", 1_000, 1_000)]

        # Stripe reports the refund (charge.refunded, amount_refunded 400): the withdrawal already
        # took that money from the balance, so it is not debited again.
        charge_id = (await client.v1.payment_intents.retrieve_async(intent)).latest_charge.id
        charge = (await client.v1.charges.retrieve_async(charge_id)).to_dict()
        assert charge["amount_refunded"] == 400
        await deliver(gateway, stripe_event("charge.refunded", charge))
        assert (await credits(gateway, owner))["balance"] == 600
        payment = (await gateway.get(f"/api/v1/payments/topups/{topped['paymentId']}", headers=headers)).json()["data"]
        assert {k: payment[k] for k in ("status", "refunded", "payoutRefunded", "credited")} == {
            "status": "partially_refunded", "refunded": 400, "payoutRefunded": 400, "credited": 1_000}

        # A refund the customer gets on top of it is still debited.
        await client.v1.refunds.create_async({"payment_intent": intent, "amount": 100})
        charge = (await client.v1.charges.retrieve_async(charge_id)).to_dict()
        await deliver(gateway, stripe_event("charge.refunded", charge))
        assert (await credits(gateway, owner))["balance"] == 500
        history = (await gateway.get("/api/v1/payments/history", headers=headers)).json()["data"]["items"]
        assert [(m["kind"], m["amount"]) for m in history] == [("refund", -100), ("withdrawal", -400), ("topup", 1_000)]

        ours = topped["paymentId"]
        await payment_events.find(lambda e: e["type"] == "billing.payment.succeeded.v1" and e["subject"] == ours)
        reversed_ = await payment_events.find(lambda e: e["type"] == "billing.payment.reversed.v1" and e["subject"] == ours)
        assert {k: reversed_["data"][k] for k in ("amountMinor", "reason", "tenantId")} == {
            "amountMinor": 100, "reason": "refund", "tenantId": owner["user"]["tenantId"]}
        # One key, one partition: a reversal of the payout refund would have come before it.
        assert [e["data"]["amountMinor"] for e in payment_events.seen
                if e["type"] == "billing.payment.reversed.v1" and e["subject"] == ours] == [100]
        paid_event = await withdrawal_events.find(
            lambda e: e["type"] == "billing.withdrawal.paid.v1" and e["subject"] == withdrawal["id"])
        assert {k: paid_event["data"][k] for k in ("method", "reference", "amountMinor", "refundedMinor")} == {
            "method": "stripe_refund", "reference": refund.id, "amountMinor": 400, "refundedMinor": 400}
        requested = [e for e in withdrawal_events.seen
                     if e["type"] == "billing.withdrawal.requested.v1" and e["subject"] == withdrawal["id"]]
        assert len(requested) == 1 and requested[0]["data"]["amountMinor"] == 400


async def test_two_admins_approving_at_once_pay_out_once(gateway, admin):
    owner = await owner_with(gateway, admin, 1_000)
    withdrawal = (await withdraw(gateway, owner, 1_000)).json()["data"]
    answers = await asyncio.gather(*(gateway.post(approve_path(withdrawal["id"]), headers=bearer(admin)) for _ in range(3)))
    assert sorted(r.status_code for r in answers) == [200, 409, 409]
    assert await credits(gateway, owner) == {"balance": 0, "held": 0, "available": 0, "currency": "USD"}


async def test_a_decision_retried_with_its_idempotency_key_replays_the_answer(gateway, admin):
    owner = await owner_with(gateway, admin, 1_000)
    withdrawal = (await withdraw(gateway, owner, 500)).json()["data"]
    headers = {**bearer(admin), **key()}
    first = await gateway.post(approve_path(withdrawal["id"]), headers=headers)
    retry = await gateway.post(approve_path(withdrawal["id"]), headers=headers)
    assert first.status_code == retry.status_code == 200 and first.json() == retry.json()
    other = (await withdraw(gateway, owner, 100)).json()["data"]  # the same key for another decision
    reused = await gateway.post(approve_path(other["id"]), headers=headers)
    assert reused.status_code == 422 and reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert await credits(gateway, owner) == {"balance": 500, "held": 100, "available": 400, "currency": "USD"}


async def test_a_rejected_withdrawal_gives_the_credit_back(gateway, admin):
    owner = await owner_with(gateway, admin, 1_500)
    async with EventTap("billing.withdrawal") as events:
        withdrawal = (await withdraw(gateway, owner, 1_500, note="everything")).json()["data"]
        assert (await credits(gateway, owner))["available"] == 0
        bad = await gateway.post(approve_path(withdrawal["id"], "reject"), json={"reason": "x", "refund": True}, headers=bearer(admin))
        assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION_ERROR"
        assert {d["field"] for d in bad.json()["details"]} == {"reason", "refund"}

        r = await gateway.post(approve_path(withdrawal["id"], "reject"), json={"reason": "bank details missing"}, headers=bearer(admin))
        assert r.status_code == 200, r.text
        rejected = r.json()["data"]
        assert (rejected["status"], rejected["rejectionReason"], rejected["note"]) == ("rejected", "bank details missing", "everything")
        assert await credits(gateway, owner) == {"balance": 1_500, "held": 0, "available": 1_500, "currency": "USD"}
        assert (await gateway.post(approve_path(withdrawal["id"]), headers=bearer(admin))).status_code == 409
        mine = (await gateway.get("/api/v1/payments/withdrawals", params={"status": "rejected"}, headers=bearer(owner))).json()
        assert [w["rejectionReason"] for w in mine["data"]["items"]] == ["bank details missing"]
        event = await events.find(lambda e: e["type"] == "billing.withdrawal.rejected.v1" and e["subject"] == withdrawal["id"])
        assert (event["data"]["reason"], event["data"]["amountMinor"]) == ("bank details missing", 1_500)


async def test_only_owners_and_admins_withdraw_and_only_platform_admins_decide(gateway, admin):
    owner = await owner_with(gateway, admin, 1_000)
    agent = await relogin(gateway, owner, "UPDATE auth.memberships SET role = 'AGENT' WHERE user_id = "
                                          "(SELECT id FROM auth.users WHERE email = $1)")
    refused = await withdraw(gateway, agent, 100)
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"

    stranger = await owner_with(gateway, admin, 0)
    manager = await owner_with(gateway, admin, 1_000)
    withdrawal = (await withdraw(gateway, manager, 300)).json()["data"]
    theirs = (await gateway.get("/api/v1/payments/withdrawals", headers=bearer(stranger))).json()["data"]
    assert theirs["items"] == [] and theirs["total"] == 0
    for path, body in ((approve_path(withdrawal["id"]), None), (approve_path(withdrawal["id"], "reject"), {"reason": "mine now"})):
        for who in (stranger, manager):
            r = await gateway.post(path, json=body, headers=bearer(who))
            assert r.status_code == 403, r.text
    assert (await gateway.get("/api/v1/admin/payments/withdrawals", headers=bearer(manager))).status_code == 403
    assert (await credits(gateway, manager))["held"] == 300


async def test_withdrawing_more_than_is_available_is_402_and_holds_nothing(gateway, admin):
    owner = await owner_with(gateway, admin, 1_000)
    headers = {**bearer(owner), **key()}
    r = await gateway.post("/api/v1/payments/withdraw", json={"amount": 1_001}, headers=headers)
    assert r.status_code == 402 and r.json()["code"] == "INSUFFICIENT_CREDITS"
    assert r.json()["details"] == {"requested": 1_001, "available": 1_000}
    assert await credits(gateway, owner) == {"balance": 1_000, "held": 0, "available": 1_000, "currency": "USD"}
    async with superuser() as conn:
        stored = await conn.fetchval(
            "SELECT (SELECT count(*) FROM billing.withdrawals WHERE tenant_id = $1) + "
            "(SELECT count(*) FROM billing.holds h JOIN billing.accounts a ON a.id = h.account_id WHERE a.tenant_id = $1)",
            owner["user"]["tenantId"],
        )
    assert stored == 0
    # Nothing was stored for the key either: it can carry a request that fits.
    assert (await gateway.post("/api/v1/payments/withdraw", json={"amount": 1_000}, headers=headers)).status_code == 201


async def test_a_withdrawal_needs_an_idempotency_key_and_a_repeat_is_replayed_not_repeated(gateway, admin):
    owner = await owner_with(gateway, admin, 1_000)
    missing = await gateway.post("/api/v1/payments/withdraw", json={"amount": 200}, headers=bearer(owner))
    assert missing.status_code == 422 and missing.json()["code"] == "VALIDATION_ERROR"
    for body in ({"amount": 99}, {"amount": 200, "tenantId": "other"}, {"amount": "lots"}):
        r = await gateway.post("/api/v1/payments/withdraw", json=body, headers={**bearer(owner), **key()})
        assert r.status_code == 422, (body, r.text)

    headers = {**bearer(owner), **key()}
    first = await gateway.post("/api/v1/payments/withdraw", json={"amount": 200, "note": "n"}, headers=headers)
    repeat = await gateway.post("/api/v1/payments/withdraw", json={"amount": 200, "note": "n"}, headers=headers)
    assert first.status_code == repeat.status_code == 201 and first.json() == repeat.json()
    changed = await gateway.post("/api/v1/payments/withdraw", json={"amount": 300, "note": "n"}, headers=headers)
    assert changed.status_code == 422 and changed.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert (await credits(gateway, owner))["held"] == 200
    listed = (await gateway.get("/api/v1/payments/withdrawals", headers=bearer(owner))).json()["data"]
    assert listed["total"] == 1


# -- pricing rules ---------------------------------------------------------------------------


def route() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def test_pricing_rules_are_managed_by_platform_admins_with_validation_and_one_rule_per_scope(gateway, admin):
    plain = await register(gateway)
    rules = "/api/v1/admin/pricing-rules"
    assert (await gateway.get(rules, headers=bearer(plain))).status_code == 403
    assert (await gateway.post(rules, json={"kind": "sms", "fixedPriceMinor": 1}, headers=bearer(plain))).status_code == 403

    r_route = route()
    created = await gateway.post(rules, json={"kind": "sms", "country": "fo", "route": r_route, "fixedPriceMinor": 9}, headers=bearer(admin))
    assert created.status_code == 201, created.text
    rule = created.json()["data"]
    assert (rule["country"], rule["route"], rule["price"], rule["currency"], rule["active"]) == ("FO", r_route, 9, "USD", True)

    duplicate = await gateway.post(rules, json={"kind": "sms", "country": "FO", "route": r_route, "marginBp": 100, "costMinor": 5}, headers=bearer(admin))
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "DUPLICATE_PRICING_RULE"
    assert duplicate.json()["details"] == {"id": rule["id"]}

    invalid = [
        ({"kind": "sms", "route": route(), "fixedPriceMinor": 5, "marginBp": 100}, "fixedPriceMinor"),
        ({"kind": "sms", "route": route()}, "fixedPriceMinor"),
        ({"kind": "sms", "route": route(), "marginBp": 100}, "costMinor"),
        ({"kind": "sms", "route": route(), "provider": "smsman", "fixedPriceMinor": 5}, "provider"),
        ({"kind": "order", "route": route(), "fixedPriceMinor": 5}, "route"),
        ({"kind": "sms", "country": "ZZ", "fixedPriceMinor": 5}, "country"),
        ({"kind": "sms", "route": route(), "fixedPriceMinor": -1}, "fixedPriceMinor"),
        ({"kind": "sms", "route": route(), "fixedPriceMinor": 5, "currency": "EUR"}, "currency"),
        ({"kind": "fax", "fixedPriceMinor": 5}, "kind"),
        ({"kind": "sms", "route": route(), "fixedPriceMinor": 5, "owner": "me"}, "owner"),
    ]
    for body, field in invalid:
        r = await gateway.post(rules, json=body, headers=bearer(admin))
        assert r.status_code == 422, (body, r.text)
        error = r.json()
        assert error["success"] is False and error["code"] == "VALIDATION_ERROR" and error["requestId"]
        assert field in {d["field"] for d in error["details"]}, (body, error)

    path = f"{rules}/{rule['id']}"
    switched = await gateway.patch(path, json={"fixedPriceMinor": None, "marginBp": 2500, "costMinor": 8}, headers=bearer(admin))
    assert switched.status_code == 200, switched.text
    assert (switched.json()["data"]["price"], switched.json()["data"]["marginBp"]) == (10, 2500)
    for body in ({"kind": "order"}, {"marginBp": None}, {"active": None}):
        r = await gateway.patch(path, json=body, headers=bearer(admin))
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", (body, r.text)

    found = await gateway.get(rules, params={"kind": "sms", "country": "fo", "route": r_route}, headers=bearer(admin))
    assert [x["id"] for x in found.json()["data"]["items"]] == [rule["id"]]
    assert (await gateway.delete(path, headers=bearer(admin))).status_code == 200
    assert (await gateway.get(path, headers=bearer(admin))).json()["code"] == "PRICING_RULE_NOT_FOUND"
    assert (await gateway.delete(path, headers=bearer(admin))).status_code == 404


async def test_anyone_signed_in_sees_the_price_of_a_segment_and_the_most_specific_rule_sets_it(gateway, admin):
    user = await register(gateway)
    country, fast, other = random.choice(QUIET_COUNTRIES), route(), route()

    async def price(r: str) -> int:
        got = await gateway.get("/api/v1/payments/prices", params={"country": country.lower(), "route": r}, headers=bearer(user))
        assert got.status_code == 200, got.text
        data = got.json()["data"]
        assert (data["country"], data["route"], data["currency"]) == (country, r, "USD")
        return data["segmentPrice"]

    assert (await gateway.get("/api/v1/payments/prices", params={"country": "US"})).status_code == 401
    assert (await gateway.get("/api/v1/payments/prices", params={"country": "ZZ"}, headers=bearer(user))).status_code == 422
    default = await price(fast)
    created = []
    try:
        for body in ({"kind": "sms", "country": country, "fixedPriceMinor": default + 30},
                     {"kind": "sms", "country": country, "route": fast, "marginBp": 5000, "costMinor": 7}):
            r = await gateway.post("/api/v1/admin/pricing-rules", json=body, headers=bearer(admin))
            assert r.status_code == 201, r.text
            created.append(r.json()["data"]["id"])
        assert await price(fast) == 11  # 7 x 1.5 = 10.5, rounded up
        assert await price(other) == default + 30
    finally:
        for rule_id in created:
            await gateway.delete(f"/api/v1/admin/pricing-rules/{rule_id}", headers=bearer(admin))
    assert await price(fast) == default


# -- the provider catalogue ------------------------------------------------------------------


async def publish_catalog(provider: str, items: list[dict]) -> None:
    """Play provider-sync: one provider.catalog.updated.v1 CloudEvent on topic provider.catalog."""
    value = json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/switchboard/provider-sync",
        "type": "provider.catalog.updated.v1", "time": datetime.now(UTC).isoformat(), "subject": provider,
        "datacontenttype": "application/json", "data": {"provider": provider, "items": items},
    }).encode()
    producer = make_producer(BaseServiceSettings(service_name="test-provider-sync"))
    await producer.start()
    try:
        await producer.send_and_wait("provider.catalog", value, key=provider.encode())
    finally:
        await producer.stop()


async def test_a_catalogue_update_moves_the_cost_behind_a_margin_rule_and_prices_new_scopes(gateway, admin):
    user = await register(gateway)
    provider, priced, fresh = f"t-{uuid.uuid4().hex[:10]}", route(), route()
    r = await gateway.post(
        "/api/v1/admin/pricing-rules", json={"kind": "sms", "country": "FO", "route": priced, "marginBp": 5000},
        headers=bearer(admin),
    )
    assert r.status_code == 201 and r.json()["data"]["price"] is None  # waits for the catalogue
    rule_id = r.json()["data"]["id"]

    async def price(r: str) -> int:
        got = await gateway.get("/api/v1/payments/prices", params={"country": "FO", "route": r}, headers=bearer(user))
        return got.json()["data"]["segmentPrice"]

    await publish_catalog(provider, [
        {"kind": "sms", "country": "FO", "route": priced, "costMinor": 7, "currency": "USD"},
        {"kind": "sms", "country": "FO", "route": fresh, "costMinor": 10, "currency": "USD"},
        {"kind": "order", "country": "FO", "service": "telegram", "costMinor": 40, "currency": "USD"},
    ])
    try:
        deadline = time.monotonic() + 15
        while await price(priced) != 11 and time.monotonic() < deadline:  # 7 x 1.5 = 10.5 -> 11
            await asyncio.sleep(0.2)
        assert await price(priced) == 11
        assert await price(fresh) == 13  # a new scope gets the default 30 % margin
        listed = await gateway.get("/api/v1/admin/pricing-rules", params={"provider": provider}, headers=bearer(admin))
        [order] = listed.json()["data"]["items"]
        assert (order["kind"], order["service"], order["costMinor"], order["marginBp"], order["price"]) == (
            "order", "telegram", 40, 3000, 52
        )
    finally:
        ours = {rule_id}
        for params in ({"route": fresh}, {"provider": provider}):
            listed = await gateway.get("/api/v1/admin/pricing-rules", params=params, headers=bearer(admin))
            ours |= {x["id"] for x in listed.json()["data"]["items"]}
        for rule_id in ours:
            await gateway.delete(f"/api/v1/admin/pricing-rules/{rule_id}", headers=bearer(admin))

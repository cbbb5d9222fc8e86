"""Auth as a user meets it: accounts, sessions, phone OTP, password reset, roles, admin, keys.

Login and OTP calls go straight to the auth service with a test-unique X-Real-IP (what the
gateway sets), so per-IP limits are exercised per test instead of shared by the whole suite.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time
import uuid

import httpx
import pytest
from auth.settings import AuthSettings
from common.sealed import unseal

from tests.support import AUTH_DIRECT, LOGS, EventTap, random_ip, random_phone, superuser

PASSWORD = "correct horse battery"


def email() -> str:
    return f"a{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture
async def auth():
    async with httpx.AsyncClient(base_url=AUTH_DIRECT, headers={"X-Real-IP": random_ip()}, timeout=15) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def register(client, tenant: str | None = "Acme", path="/api/v1/users/register", **extra) -> dict:  # noqa: ANN001
    body = {"email": email(), "password": PASSWORD, "name": "Ann Example", **extra}
    if tenant:
        body["tenantName"] = tenant
    r = await client.post(path, json=body)
    assert r.status_code == 201, r.text
    return {**r.json()["data"], "email": body["email"]}


# -- accounts --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/users/register", "/api/v1/auth/register", "/api/auth/register"])
async def test_every_seed_register_path_creates_an_owner(gateway, path):
    data = await register(gateway, path=path)
    assert data["user"]["role"] == "OWNER" and data["refreshToken"] and data["newUser"] is True
    for me_path in ("/api/v1/users/me", "/api/v1/auth/me", "/api/auth/me"):
        me = await gateway.get(me_path, headers=bearer(data["accessToken"]))
        assert me.status_code == 200 and me.json()["data"]["email"] == data["email"]
    for login_path in ("/api/v1/users/login", "/api/v1/auth/login", "/api/auth/login"):
        r = await gateway.post(login_path, json={"email": data["email"].upper(), "password": PASSWORD})
        assert r.status_code == 200, r.text


async def test_passwords_are_stored_as_argon2id_with_at_least_19_mib_and_2_passes(gateway):
    data = await register(gateway)
    async with superuser() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM auth.users WHERE email = $1", data["email"])
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored


async def test_login_takes_as_long_for_an_unknown_email_as_for_a_real_one(auth):
    data = await register(auth)
    real, unknown = [], []
    for _ in range(7):
        t = time.perf_counter()
        assert (await auth.post("/api/v1/auth/login", json={"email": data["email"], "password": PASSWORD})).status_code == 200
        real.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert (await auth.post("/api/v1/auth/login", json={"email": email(), "password": PASSWORD})).status_code == 401
        unknown.append(time.perf_counter() - t)
    ratio = statistics.median(unknown) / statistics.median(real)
    # Without the dummy hash the unknown email answers ~50x faster; equal work keeps it near 1.
    assert 0.33 < ratio < 3, (real, unknown)


async def test_repeated_failures_lock_the_account_with_429_and_retry_after(auth):
    data = await register(auth)
    for _ in range(5):
        r = await auth.post("/api/v1/auth/login", json={"email": data["email"], "password": "wrong password"})
        assert r.status_code == 401
    locked = await auth.post("/api/v1/auth/login", json={"email": data["email"], "password": PASSWORD})
    assert locked.status_code == 429 and locked.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(locked.headers["retry-after"]) <= 900


async def test_repeated_failures_from_one_ip_are_limited_across_accounts(auth):
    for i in range(30):
        r = await auth.post("/api/v1/auth/login", json={"email": email(), "password": "nope-nope"})
        assert r.status_code == 401, (i, r.text)
    r = await auth.post("/api/v1/auth/login", json={"email": email(), "password": "nope-nope"})
    assert r.status_code == 429 and "retry-after" in r.headers


async def test_redis_down_refuses_logins_instead_of_skipping_the_limit(auth):
    from tests.support import devstack

    data = await register(auth)
    devstack("ctl", "stop", "redis")
    try:
        r = await auth.post("/api/v1/auth/login", json={"email": data["email"], "password": PASSWORD})
        assert r.status_code == 503, r.text
    finally:
        devstack("ctl", "start", "redis")
    for _ in range(50):
        r = await auth.post("/api/v1/auth/login", json={"email": data["email"], "password": PASSWORD})
        if r.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert r.status_code == 200


# -- sessions --------------------------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_token_revokes_the_whole_family(gateway):
    data = await register(gateway)
    first = data["refreshToken"]
    r = await gateway.post("/api/v1/auth/refresh", json={"refreshToken": first})
    assert r.status_code == 200
    second = r.json()["data"]["refreshToken"]
    assert second != first
    r = await gateway.post("/api/v1/auth/refresh", json={"refreshToken": second})
    third = r.json()["data"]["refreshToken"]
    # Someone replays the first token (it leaked): refused, and the family dies with it.
    replay = await gateway.post("/api/v1/auth/refresh", json={"refreshToken": first})
    assert replay.status_code == 401 and replay.json()["code"] == "REFRESH_TOKEN_REUSED"
    after = await gateway.post("/api/v1/auth/refresh", json={"refreshToken": third})
    assert after.status_code == 401


async def test_logout_ends_the_session_and_refresh_tokens_are_stored_hashed(gateway):
    data = await register(gateway)
    assert (await gateway.post("/api/v1/auth/logout", json={"refreshToken": data["refreshToken"]})).status_code == 200
    r = await gateway.post("/api/v1/auth/refresh", json={"refreshToken": data["refreshToken"]})
    assert r.status_code == 401
    async with superuser() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM auth.refresh_tokens WHERE token_hash = $1", data["refreshToken"]
        ) == 0
        hashed = hashlib.sha256(data["refreshToken"].encode()).hexdigest()
        assert await conn.fetchval(
            "SELECT count(*) FROM auth.refresh_tokens WHERE token_hash = $1 AND revoked_at IS NOT NULL", hashed
        ) == 1


async def test_a_refresh_token_is_not_an_access_token(gateway):
    data = await register(gateway)
    for svc in ("auth", "billing", "chat"):
        r = await gateway.get(f"/_svc/{svc}/whoami", headers=bearer(data["refreshToken"]))
        assert r.status_code == 401, (svc, r.text)


# -- phone OTP -------------------------------------------------------------------------------


async def send_and_read_code(auth, phone: str, purpose: str = "login") -> tuple[str, dict]:  # noqa: ANN001
    async with EventTap("auth.otp") as tap:
        r = await auth.post("/api/v1/auth/send-otp", json={"phone": phone, "purpose": purpose})
        assert r.status_code == 202, r.text
        event = await tap.find(lambda e: e["data"]["phone"] == phone and e["data"]["purpose"] == purpose)
    assert event["type"] == "auth.otp.requested.v2" and "code" not in event["data"]
    code = unseal(AuthSettings().otp_seal_keys, event["data"]["sealedCode"])  # what messaging does
    assert code not in r.text  # never answered by the API; on the topic, only sealed
    async with superuser() as conn:  # in the outbox table too
        rows = await conn.fetch(
            "SELECT envelope::text AS env FROM auth.outbox WHERE event_type = 'auth.otp.requested.v2'"
            " AND envelope->'data'->>'challengeId' = $1", r.json()["data"]["challengeId"],
        )
    assert len(rows) == 1 and json.loads(rows[0]["env"])["data"] == event["data"]
    return code, r.json()["data"]


async def test_otp_signs_in_creating_the_account_once_and_each_code_works_once(auth):
    phone = random_phone()
    code, sent = await send_and_read_code(auth, phone)
    assert len(code) == 6 and code.isdigit() and sent["expiresIn"] == 300
    r = await auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": code, "name": "Otto"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["newUser"] is True and data["user"]["phone"] == phone and data["user"]["name"] == "Otto"
    again = await auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": code})
    assert again.status_code == 401
    # The code is in the event for messaging to deliver, and nowhere in our own logs.
    for log_file in LOGS.glob("auth-*.log"):
        for line in log_file.read_text(errors="replace").splitlines():
            assert not (code in line and (phone in line or sent["challengeId"] in line)), line
    # Signing in again later finds the same account.
    async with superuser() as conn:
        await conn.execute("DELETE FROM auth.otp_challenges WHERE phone = $1", phone)  # skip the resend cooldown
        assert await conn.fetchval("SELECT count(*) FROM auth.users WHERE phone = $1", phone) == 1
        stored = await conn.fetchval("SELECT count(*) FROM auth.otp_challenges WHERE code_hash = $1", code)
        assert stored == 0  # only a keyed hash is stored


async def test_five_wrong_codes_lock_the_challenge_even_for_the_right_code(auth):
    phone = random_phone()
    code, _ = await send_and_read_code(auth, phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answers = [
        (await auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": wrong})).status_code
        for _ in range(5)
    ]
    assert answers == [401, 401, 401, 401, 423]
    r = await auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": code})
    assert r.status_code == 423 and r.json()["code"] == "OTP_LOCKED"


async def test_parallel_guesses_cannot_exceed_the_attempt_limit(auth):
    phone = random_phone()
    code, _ = await send_and_read_code(auth, phone)
    guesses = [f"{(int(code) + i) % 1_000_000:06d}" for i in range(1, 21)]
    await asyncio.gather(*(auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": g}) for g in guesses))
    async with superuser() as conn:
        attempts = await conn.fetchval("SELECT attempts FROM auth.otp_challenges WHERE phone = $1", phone)
    assert attempts == 5


async def test_a_code_is_bound_to_its_phone_purpose_and_five_minutes(auth):
    phone, other = random_phone(), random_phone()
    code, _ = await send_and_read_code(auth, phone)
    assert (await auth.post("/api/v1/auth/verify-otp", json={"phone": other, "code": code})).status_code == 401
    r = await auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": code, "purpose": "verify_phone"})
    assert r.status_code == 401
    async with superuser() as conn:
        await conn.execute(
            "UPDATE auth.otp_challenges SET expires_at = now() - interval '1 second' WHERE phone = $1", phone
        )
    r = await auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": code})
    assert r.status_code == 401 and r.json()["code"] == "OTP_INVALID"


async def test_resends_are_throttled_per_phone_and_per_ip(auth):
    phone = random_phone()
    await send_and_read_code(auth, phone)
    r = await auth.post("/api/v1/auth/send-otp", json={"phone": phone})
    assert r.status_code == 429 and int(r.headers["retry-after"]) <= 30
    statuses = [
        (await auth.post("/api/v1/auth/send-otp", json={"phone": random_phone()})).status_code for _ in range(20)
    ]
    # 20 requests per IP per hour, counted first: the two above (even the refused one) used two.
    assert statuses[:18] == [202] * 18 and statuses[18:] == [429, 429]


@pytest.mark.parametrize(
    "phone, code",
    [("12345", "INVALID_PHONE"), ("+1 202 555 01", "INVALID_PHONE"), ("+37121234567", "COUNTRY_NOT_ALLOWED"),
     ("+5352345678", "COUNTRY_NOT_ALLOWED")],
)
async def test_bad_or_disallowed_numbers_get_no_code(auth, phone, code):
    r = await auth.post("/api/v1/auth/send-otp", json={"phone": phone})
    assert r.status_code == 422 and r.json()["code"] == code


# -- password reset --------------------------------------------------------------------------


async def reset_token(event: dict, purpose: str) -> str:
    """The link's token, opened as whoever delivers the email would: on the topic and in the
    outbox row it is only sealed."""
    assert event["type"] == "auth.password_reset.requested.v2"
    assert event["data"]["purpose"] == purpose
    assert "token" not in event["data"]
    token = unseal(AuthSettings().otp_seal_keys, event["data"]["sealedToken"])
    assert token not in json.dumps(event)
    async with superuser() as conn:
        rows = await conn.fetch("SELECT envelope::text AS env FROM auth.outbox WHERE event_id = $1", event["id"])
    assert len(rows) == 1 and token not in rows[0]["env"]
    assert json.loads(rows[0]["env"])["data"] == event["data"]
    return token


async def test_password_reset_link_works_once_and_logs_every_session_out(gateway, auth):
    data = await register(gateway)
    async with EventTap("auth.password_reset") as tap:
        r = await gateway.post("/api/v1/auth/password-reset/request", json={"email": data["email"]})
        assert r.status_code == 202
        event = await tap.find(lambda e: e["data"]["email"] == data["email"])
    unknown = await gateway.post("/api/v1/auth/password-reset/request", json={"email": email()})
    assert unknown.status_code == 202 and unknown.json() == r.json()  # no account enumeration
    token = await reset_token(event, "password_reset")
    r = await gateway.post("/api/v1/auth/password-reset/confirm", json={"token": token, "newPassword": "a brand new secret"})
    assert r.status_code == 200
    reuse = await gateway.post("/api/v1/auth/password-reset/confirm", json={"token": token, "newPassword": "yet another one"})
    assert reuse.status_code == 400 and reuse.json()["code"] == "RESET_TOKEN_INVALID"
    assert (await gateway.post("/api/v1/auth/refresh", json={"refreshToken": data["refreshToken"]})).status_code == 401
    assert (await auth.post("/api/v1/auth/login", json={"email": data["email"], "password": PASSWORD})).status_code == 401
    assert (await auth.post("/api/v1/auth/login", json={"email": data["email"], "password": "a brand new secret"})).status_code == 200


# -- profile ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("role", "ADMIN"), ("tenantId", str(uuid.uuid4())), ("isAdmin", True),
                                          ("isPlatformAdmin", True), ("email", "x@y.example")])
async def test_profile_updates_cannot_assign_privileges(gateway, field, value):
    data = await register(gateway)
    r = await gateway.put("/api/v1/auth/profile", json={"name": "Eve", field: value}, headers=bearer(data["accessToken"]))
    assert r.status_code == 422
    me = (await gateway.get("/api/v1/users/me", headers=bearer(data["accessToken"]))).json()["data"]
    assert me["name"] == "Ann Example" and me["role"] == "OWNER" and me["isPlatformAdmin"] is False


async def test_profile_update_changes_the_profile_and_announces_it(gateway):
    data = await register(gateway)
    async with EventTap("auth.user") as tap:
        r = await gateway.put(
            "/api/v1/users/me", json={"name": "Ann B", "about": "hello", "avatarMediaId": "m_123"},
            headers=bearer(data["accessToken"]),
        )
        assert r.status_code == 200 and r.json()["data"]["about"] == "hello"
        event = await tap.find(lambda e: e["type"] == "auth.user.updated.v1" and e["subject"] == data["user"]["id"])
    assert event["data"]["name"] == "Ann B" and event["data"]["avatarMediaId"] == "m_123"
    long = await gateway.put("/api/v1/users/me", json={"about": "x" * 501}, headers=bearer(data["accessToken"]))
    assert long.status_code == 422


# -- roles and members -----------------------------------------------------------------------


async def join_by_invite(gateway, owner_token: str, role: str = "AGENT") -> dict:  # noqa: ANN001
    address = email()
    async with EventTap("auth.password_reset") as tap:
        r = await gateway.post("/api/v1/auth/members", json={"email": address, "name": "Agent A", "role": role},
                               headers=bearer(owner_token))
        assert r.status_code == 201, r.text
        event = await tap.find(lambda e: e["data"]["email"] == address)
    r = await gateway.post("/api/v1/auth/password-reset/confirm",
                           json={"token": await reset_token(event, "invitation"), "newPassword": "agent password 1"})
    assert r.status_code == 200
    r = await gateway.post("/api/v1/auth/login", json={"email": address, "password": "agent password 1"})
    assert r.status_code == 200
    return r.json()["data"]


async def test_owner_invites_agents_who_cannot_manage_members(gateway):
    owner = await register(gateway, tenant="Inbox Co")
    agent = await join_by_invite(gateway, owner["accessToken"])
    assert agent["user"]["role"] == "AGENT" and agent["user"]["tenantId"] == owner["user"]["tenantId"]
    r = await gateway.post("/api/v1/auth/members", json={"email": email(), "name": "X", "role": "AGENT"},
                           headers=bearer(agent["accessToken"]))
    assert r.status_code == 403
    members = (await gateway.get("/api/v1/auth/members", headers=bearer(agent["accessToken"]))).json()["data"]
    assert {m["role"] for m in members} == {"OWNER", "AGENT"}


async def test_admins_manage_agents_only_and_a_tenant_keeps_an_owner(gateway):
    owner = await register(gateway, tenant="Roles Co")
    admin = await join_by_invite(gateway, owner["accessToken"], role="ADMIN")
    agent = await join_by_invite(gateway, admin["accessToken"], role="AGENT")  # ADMIN may add agents
    promote = await gateway.patch(f"/api/v1/auth/members/{agent['user']['id']}", json={"role": "OWNER"},
                                  headers=bearer(admin["accessToken"]))
    assert promote.status_code == 403
    demote_owner = await gateway.patch(f"/api/v1/auth/members/{owner['user']['id']}", json={"role": "AGENT"},
                                       headers=bearer(admin["accessToken"]))
    assert demote_owner.status_code == 403
    last = await gateway.patch(f"/api/v1/auth/members/{owner['user']['id']}", json={"role": "ADMIN"},
                               headers=bearer(owner["accessToken"]))
    assert last.status_code == 409 and last.json()["code"] == "LAST_OWNER"
    removed = await gateway.delete(f"/api/v1/auth/members/{agent['user']['id']}", headers=bearer(admin["accessToken"]))
    assert removed.status_code == 200
    stranger = await register(gateway, tenant="Other Co")
    r = await gateway.delete(f"/api/v1/auth/members/{admin['user']['id']}", headers=bearer(stranger["accessToken"]))
    assert r.status_code == 404  # another tenant's member does not exist for you


async def test_user_search_finds_a_phone_anywhere_but_names_only_in_your_tenant(gateway, auth):
    phone = random_phone()
    code, _ = await send_and_read_code(auth, phone)
    otp_user = (await auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": code, "name": "Zed Phone"})).json()["data"]
    searcher = await register(gateway)
    by_phone = await gateway.get("/api/v1/users/search", params={"q": phone}, headers=bearer(searcher["accessToken"]))
    assert [u["id"] for u in by_phone.json()["data"]] == [otp_user["user"]["id"]]
    assert "email" not in by_phone.json()["data"][0]
    by_name = await gateway.get("/api/v1/users/search", params={"q": "Zed"}, headers=bearer(searcher["accessToken"]))
    assert by_name.status_code == 200 and by_name.json()["data"] == []
    own = await gateway.get("/api/v1/users/search", params={"q": "ann ex"}, headers=bearer(searcher["accessToken"]))
    assert [u["id"] for u in own.json()["data"]] == [searcher["user"]["id"]]  # a name prefix, any case


# -- platform admin and keys -----------------------------------------------------------------


async def make_platform_admin(gateway) -> dict:  # noqa: ANN001
    data = await register(gateway)
    async with superuser() as conn:
        await conn.execute("UPDATE auth.users SET is_platform_admin = true WHERE email = $1", data["email"])
    r = await gateway.post("/api/v1/auth/login", json={"email": data["email"], "password": PASSWORD})
    return r.json()["data"]


async def test_only_platform_admins_list_users_with_filters_and_pages(gateway):
    plain = await register(gateway)
    assert (await gateway.get("/api/v1/admin/users", headers=bearer(plain["accessToken"]))).status_code == 403
    admin = await make_platform_admin(gateway)
    r = await gateway.get("/api/v1/admin/users", params={"q": plain["email"], "limit": 5}, headers=bearer(admin["accessToken"]))
    assert r.status_code == 200
    page = r.json()["data"]
    assert page["total"] == 1 and page["items"][0]["email"] == plain["email"] and page["totalPages"] == 1
    admins = await gateway.get("/api/v1/admin/users", params={"isAdmin": "true", "limit": 100}, headers=bearer(admin["accessToken"]))
    listed = admins.json()["data"]["items"]
    assert admin["user"]["id"] in [u["id"] for u in listed] and all(u["isPlatformAdmin"] for u in listed)
    for wildcard in ("_", "%"):  # matched as themselves, not as LIKE wildcards
        blurred = plain["email"][:4] + wildcard + plain["email"][5:]
        r = await gateway.get("/api/v1/admin/users", params={"q": blurred}, headers=bearer(admin["accessToken"]))
        assert r.status_code == 200 and r.json()["data"]["total"] == 0, blurred
    assert (await gateway.get("/api/v1/admin/users", params={"limit": 101}, headers=bearer(admin["accessToken"]))).status_code == 422


async def test_key_rotation_logs_nobody_out(gateway):
    admin = await make_platform_admin(gateway)
    before = await register(gateway)
    old_kid = (await gateway.get("/.well-known/jwks.json")).json()["keys"][-1]["kid"]
    r = await gateway.post("/api/v1/admin/keys/rotate", headers=bearer(admin["accessToken"]))
    assert r.status_code == 200
    new_kid = r.json()["data"]["kid"]
    kids = [k["kid"] for k in (await gateway.get("/.well-known/jwks.json")).json()["keys"]]
    assert old_kid in kids and new_kid in kids
    after = await register(gateway)
    import jwt

    assert jwt.get_unverified_header(after["accessToken"])["kid"] == new_kid
    await asyncio.sleep(1.1)  # services refetch the JWKS for an unknown kid at most once a second
    for svc in ("billing", "chat", "media", "messaging", "provider-sync", "auth"):
        for who in (before, after):
            r = await gateway.get(f"/_svc/{svc}/whoami", headers=bearer(who["accessToken"]))
            assert r.status_code == 200, (svc, r.text)
            assert r.json()["data"]["userId"] == who["user"]["id"]


async def test_registrations_from_one_address_are_limited(gateway):
    for _ in range(30):
        assert (await gateway.post("/api/v1/users/register", json={"email": email(), "password": PASSWORD, "name": "N"})).status_code == 201
    r = await gateway.post("/api/v1/users/register", json={"email": email(), "password": PASSWORD, "name": "N"})
    assert r.status_code == 429 and "retry-after" in r.headers


async def test_parallel_wrong_passwords_cannot_exceed_the_account_limit(auth):
    data = await register(auth)
    replies = await asyncio.gather(
        *(auth.post("/api/v1/auth/login", json={"email": data["email"], "password": f"wrong-{i}"}) for i in range(20))
    )
    assert sum(r.status_code == 401 for r in replies) == 5
    assert sum(r.status_code == 429 for r in replies) == 15

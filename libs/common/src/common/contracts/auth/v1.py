"""Events published by the auth service, version 1."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.contracts.base import Payload
from common.contracts.registry import event

Role = Literal["OWNER", "ADMIN", "AGENT"]


@event("auth.user.registered.v1")
class UserRegisteredV1(Payload):
    user_id: str
    tenant_id: str
    email: str | None = None
    phone: str | None = None
    name: str = Field(max_length=200)
    role: Role
    personal_tenant: bool


@event("auth.user.updated.v1")
class UserUpdatedV1(Payload):
    user_id: str
    tenant_id: str
    name: str | None = None
    about: str | None = None
    avatar_media_id: str | None = None


@event("auth.otp.requested.v1")
class OtpRequestedV1(Payload):
    """Carries the code to the SMS sender in the clear. No longer produced (v2 seals the code);
    still consumed, for events written before the change. Consumers must never log it."""

    challenge_id: str
    phone: str
    code: str
    purpose: Literal["login", "verify_phone"]
    expires_at: str


@event("auth.password_reset.requested.v1")
class PasswordResetRequestedV1(Payload):
    """Carried the link's token in the clear. No longer produced (v2 seals it)."""

    user_id: str
    email: str
    token: str
    expires_at: str


@event("auth.membership.changed.v1")
class MembershipChangedV1(Payload):
    """A user joined a tenant, changed role, or left it (role None)."""

    user_id: str
    tenant_id: str
    role: Role | None

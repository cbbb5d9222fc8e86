"""Provider webhooks (`POST /api/v1/webhooks/sms/{provider}`) and seed 003's
`POST /api/receive-sms`."""


from common.api import Envelope, ok
from common.auth import CurrentPrincipal
from common.db.session import SessionDep
from fastapi import APIRouter, Request

from messaging.inbound import service
from messaging.inbound.schemas import ReceivedSms, ReceiveSmsCreate, WebhookAccepted
from messaging.providers.base import SmsProvider
from messaging.providers.registry import webhook_url

router = APIRouter(tags=["inbound"])


def _provider(request: Request, name: str) -> SmsProvider:
    provider = request.app.state.sms_webhook_providers.get(name)  # built at startup (messaging.app)
    if provider is None:
        service.WEBHOOKS.labels("unknown", "unknown_provider").inc()
        raise service.UnknownProvider()
    return provider


async def _body(request: Request, provider: str, limit: int = service.MAX_WEBHOOK_BYTES) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        service.WEBHOOKS.labels(provider, "too_large").inc()
        raise service.PayloadTooLarge(details={"maxBytes": limit})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            service.WEBHOOKS.labels(provider, "too_large").inc()
            raise service.PayloadTooLarge(details={"maxBytes": limit})
    return bytes(body)


@router.post("/api/v1/webhooks/sms/{provider}", response_model=Envelope[WebhookAccepted])
async def sms_webhook(provider: str, request: Request, session: SessionDep):
    """An SMS provider's delivery reports and inbound messages (no token: the `X-Signature` over
    the public URL and the raw body is checked). Stored raw and answered at once; the worker
    applies it. A signed body that cannot be read is still answered 200 (see docs/messaging.md)."""
    adapter = _provider(request, provider)
    body = await _body(request, provider)
    url = webhook_url(request.app.state.settings, provider, request.url.query)
    webhook_id = await service.store_webhook(session, adapter, url, request.headers, body)
    return ok(WebhookAccepted(webhook_id=webhook_id))


@router.post("/api/receive-sms", response_model=Envelope[ReceivedSms])
async def receive_sms(body: ReceiveSmsCreate, principal: CurrentPrincipal, session: SessionDep):
    """Seed 003: record an SMS your tenant received (`senderPhone` texted `receiverPhone`): it
    joins the conversation with that number, and STOP/START opt the sender out or in. With
    `uuid`, a repeat answers the same message and stores nothing."""
    received = await service.receive_from_api(session, principal.tenant_uuid, body)
    return ok(ReceivedSms(id=received.message_id))

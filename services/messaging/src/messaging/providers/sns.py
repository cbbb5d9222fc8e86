"""AWS SNS (direct publish to a phone number) through boto3.

What SNS does not give us, and what follows:

- No client reference: `Publish` to a phone number has no field that travels with the SMS and
  comes back, so `client_ref` is not sent; the SNS `MessageId` returned is the only handle.
- No delivery webhook: SNS reports SMS delivery only to CloudWatch Logs (if "delivery status
  logging" is set up on the account), never to a URL of ours. So for SNS a message's last known
  status is `sent` (accepted by SNS), `has_delivery_reports` is False, and `verify_webhook`
  refuses every request.

boto3 is blocking: each publish runs in a worker thread (`asyncio.to_thread`, the loop's default
executor) on one shared client (boto3 clients are thread-safe; sessions are not). botocore's own
retries are kept to one extra attempt: failing over is the router's job.

`endpoint_url` points the client at a local AWS (moto) in tests and in the local stack.
"""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from messaging.providers.base import (
    ProviderRejected,
    ProviderUnavailable,
    SendResult,
    SmsProvider,
)

SMS_TYPES = ("Transactional", "Promotional")

# Error codes that say "not now" or "not us" rather than "not this message".
_RETRYABLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "KMSThrottling",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "AuthorizationError",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "SignatureDoesNotMatch",
}


class SnsProvider(SmsProvider):
    has_delivery_reports = False

    def __init__(
        self,
        name: str = "sns",
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        sms_type: str = "Transactional",
        default_sender_id: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if sms_type not in SMS_TYPES:
            raise ValueError(f"SMS type must be one of {SMS_TYPES}, not {sms_type!r}")
        self.name = name
        self.sms_type = sms_type
        self.default_sender_id = default_sender_id or None
        # Without explicit keys, boto3's default chain applies (environment, instance role, ...).
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region,
        )
        self._client = session.client(
            "sns",
            endpoint_url=endpoint_url or None,
            config=Config(
                connect_timeout=min(timeout_s, 3.0),
                read_timeout=timeout_s,
                retries={"mode": "standard", "total_max_attempts": 2},
            ),
        )

    async def send(
        self, to: str, text: str, client_ref: str, sender: str | None = None
    ) -> SendResult:
        attributes = {"AWS.SNS.SMS.SMSType": _string(self.sms_type)}
        sender = sender or self.default_sender_id
        if sender:
            # A number is an origination number; anything else an alphanumeric sender ID.
            key = "AWS.MM.SMS.OriginationNumber" if sender.startswith("+") else "AWS.SNS.SMS.SenderID"
            attributes[key] = _string(sender)
        try:
            answer = await asyncio.to_thread(
                self._client.publish, PhoneNumber=to, Message=text, MessageAttributes=attributes
            )
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise ProviderUnavailable(self.name, f"unreachable: {exc}", code="UNREACHABLE") from exc
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            raise ProviderUnavailable(
                self.name, f"no answer: {exc}", code="NO_ANSWER", maybe_sent=True
            ) from exc
        except ClientError as exc:
            raise _classify(self.name, exc) from exc
        except BotoCoreError as exc:  # credentials missing, bad configuration: not the message's fault
            raise ProviderUnavailable(self.name, str(exc), code=type(exc).__name__) from exc
        return SendResult(provider_message_id=answer["MessageId"], accepted=True, status="sent")

    async def aclose(self) -> None:
        self._client.close()


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _classify(provider: str, exc: ClientError) -> ProviderUnavailable | ProviderRejected:
    error: dict[str, Any] = exc.response.get("Error", {})
    code = str(error.get("Code") or "ClientError")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = f"{code}: {error.get('Message') or exc}"
    if code in _RETRYABLE_CODES or status == 429 or status >= 500:
        return ProviderUnavailable(provider, message, code=code)
    # InvalidParameter (not E.164, text too long), OptedOut, ...: about this message.
    return ProviderRejected(provider, message, code=code)

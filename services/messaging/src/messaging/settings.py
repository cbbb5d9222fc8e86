from common.sealed import SealSettings
from common.settings import BaseServiceSettings
from pydantic import model_validator

# The local SMS simulator (scripts/sms_simulator.py, started by devstack.py) and its credentials.
LOCAL_SMS_SIMULATOR = "http://127.0.0.1:8430"
LOCAL_SIMULATOR_API_KEY = "sim_local_key"
LOCAL_SIMULATOR_WEBHOOK_SECRET = "sim_local_whsec"


class MessagingSettings(BaseServiceSettings, SealSettings):
    service_name: str = "messaging"
    http_port: int = 8102

    # -- SMS providers (messaging.providers) ----------------------------------------------------
    # Country (ISO code, "*" for the rest) -> provider names tried in that order
    # (SB_SMS_ROUTES='{"US": ["gateway", "sns"], "*": ["sns"]}'). Names: simulator, gateway, sns.
    sms_routes: dict[str, list[str]] = {"*": ["simulator"]}
    sms_breaker_failures: int = 5  # consecutive unavailable answers that open a provider's breaker
    sms_breaker_open_s: float = 30.0  # then one trial send after this long
    sms_provider_timeout_s: float = 10.0
    # The public address providers call with delivery reports (through the gateway); a
    # provider's webhook is "{base}/{provider name}". Signatures cover that URL.
    sms_webhook_base_url: str = "http://127.0.0.1:8080/api/v1/webhooks/sms"

    # The simulator speaks the HTTP gateway wire format (provider name "simulator").
    sms_simulator_base_url: str = LOCAL_SMS_SIMULATOR
    sms_simulator_api_key: str = LOCAL_SIMULATOR_API_KEY
    # Every secret a webhook signature may match (several while one is rotated).
    sms_simulator_webhook_secrets: list[str] = [LOCAL_SIMULATOR_WEBHOOK_SECRET]

    # A real HTTP SMS gateway (provider name "gateway"); empty base URL: not configured.
    sms_gateway_base_url: str = ""
    sms_gateway_api_key: str = ""
    sms_gateway_webhook_secrets: list[str] = []

    # AWS SNS (provider name "sns"). Empty endpoint: AWS itself; empty keys: boto3's default
    # credential chain (environment, instance role).
    sms_sns_region: str = "us-east-1"
    sms_sns_endpoint_url: str = ""
    sms_sns_access_key_id: str = ""
    sms_sns_secret_access_key: str = ""
    sms_sns_sms_type: str = "Transactional"  # or Promotional
    sms_sns_sender_id: str = ""

    # -- sending (messaging.sms) -----------------------------------------------------------------
    # The "from" of a send that names no sender of the tenant's own (SmsNumber): the platform's
    # shared number. Conversations are keyed by (our number, their number).
    sms_default_sender: str = "+18005550100"
    sms_max_recipients: int = 10_000
    # API: batches of concurrent sends written at once (sms.coalesce); 0 writes each send in its
    # request's own transaction.
    sms_coalesce_writers: int = 2
    # Dispatcher (worker): claims due messages in batches, a lease per claim; a crashed worker's
    # claims expire and are sent again with the same client reference (providers drop repeats).
    sms_dispatch_batch: int = 200
    sms_dispatch_send_batch: int = 100  # messages per provider call (one batch request), bulk lane
    sms_dispatch_concurrency: int = 64  # provider calls (batches) in flight, bulk lane
    sms_dispatch_lease_s: float = 30.0
    # Bulk lane: claimed ahead of sending, in seconds at the provider rate (dispatcher.bulk_in_flight).
    sms_dispatch_ahead_s: float = 1.0
    sms_dispatch_poll_s: float = 0.25  # fallback when no wake-up arrives
    sms_provider_rate_per_s: float = 1000.0  # per provider, all worker processes together (Redis)
    sms_max_attempts: int = 8  # "provider unavailable" retries before the message fails
    sms_retry_base_s: float = 1.0  # backoff base, doubled per attempt
    sms_retry_max_s: float = 300.0
    # OTP lane: its own claim loop and concurrency, so codes never queue behind a bulk send.
    sms_otp_concurrency: int = 16
    sms_otp_sender: str = ""  # empty: sms_default_sender
    sms_otp_text: str = "Your Switchboard code is {code}. It expires in {minutes} minutes."
    # Registering a number (messaging.numbers): a code goes to it by SMS (otp lane, platform
    # sender, not billed) and the number is the tenant's once the code comes back.
    sms_number_code_text: str = "Your Switchboard code to verify this number is {code}. It expires in {minutes} minutes."
    sms_number_code_ttl_s: int = 600
    sms_number_code_attempts: int = 5  # wrong codes before the claim needs a new code
    sms_number_code_resend_s: int = 30  # at most one code per number and tenant this often
    sms_number_code_pepper: str = "local-dev-number-pepper-change-me"  # the codes' HMAC key

    @model_validator(mode="after")
    def _sms_providers(self) -> "MessagingSettings":
        routed = {name for names in self.sms_routes.values() for name in names}
        unknown = routed - {"simulator", "gateway", "sns"}
        if unknown:
            raise ValueError(f"sms_routes names unknown providers: {sorted(unknown)}")
        if "gateway" in routed and not (self.sms_gateway_base_url and self.sms_gateway_api_key):
            raise ValueError("sms_routes uses the gateway, which has no base URL or API key")
        if self.environment == "production":
            self.check_production_seal()
            if "change-me" in self.sms_number_code_pepper:
                raise ValueError("production settings keep the placeholder sms_number_code_pepper")
            if "simulator" in routed:
                raise ValueError("production settings route SMS to the simulator")
            if "gateway" in routed and not any(
                s and s != LOCAL_SIMULATOR_WEBHOOK_SECRET for s in self.sms_gateway_webhook_secrets
            ):
                raise ValueError("production settings have no webhook secret for the SMS gateway")
        return self

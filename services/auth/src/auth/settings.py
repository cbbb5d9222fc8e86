from common.sealed import SealSettings
from common.settings import BaseServiceSettings
from pydantic import model_validator

# Destination countries OTP SMS may go to (against SMS pumping to premium ranges); extend by env.
DEFAULT_OTP_COUNTRIES = [
    "US", "CA", "GB", "IE", "DE", "FR", "NL", "BE", "ES", "PT", "IT", "SE", "NO", "DK", "FI",
    "PL", "AT", "CH", "AU", "NZ", "IN", "PK", "NG", "KE", "ZA", "EG", "BR", "MX", "AE", "SA",
]


class AuthSettings(BaseServiceSettings, SealSettings):
    service_name: str = "auth"
    http_port: int = 8101
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    # A retired signing key stays in the JWKS this long, so tokens it signed keep verifying.
    key_retire_grace_s: int = 15 * 60 + 300

    # argon2id: OWASP's minimum (19 MiB, 2 iterations, 1 lane).
    argon2_memory_kib: int = 19_456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1

    registrations_per_ip_per_hour: int = 30
    searches_per_user_per_minute: int = 60
    login_failures_per_account: int = 5
    login_failures_per_ip: int = 30
    login_failure_window_s: int = 15 * 60

    otp_ttl_s: int = 300
    otp_max_attempts: int = 5
    otp_resend_cooldown_s: int = 30
    otp_per_phone_per_hour: int = 5
    otp_per_ip_per_hour: int = 20
    otp_allowed_countries: list[str] = DEFAULT_OTP_COUNTRIES
    # Keys the OTP hashes: six digits hashed without a secret fall to a million guesses offline.
    otp_pepper: str = "local-dev-otp-pepper-change-me"

    password_reset_ttl_s: int = 30 * 60
    password_resets_per_hour: int = 5

    @model_validator(mode="after")
    def _no_placeholder_pepper(self) -> "AuthSettings":
        if self.environment == "production" and "change-me" in self.otp_pepper:
            raise ValueError("set SB_OTP_PEPPER in production")
        if self.environment == "production":
            self.check_production_seal()
        return self

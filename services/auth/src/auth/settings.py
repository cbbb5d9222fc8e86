from common.settings import BaseServiceSettings


class AuthSettings(BaseServiceSettings):
    service_name: str = "auth"
    http_port: int = 8101
    access_token_ttl_s: int = 15 * 60
    # argon2id: OWASP's minimum (19 MiB, 2 iterations, 1 lane).
    argon2_memory_kib: int = 19_456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1

# Secrets Manager holds everything the tasks need that is not public configuration. ECS injects
# them as environment variables at task start (see local.service_secrets in ecs.tf).
#
# The generated passwords pass through the Terraform state: keep the state encrypted and
# restricted (see versions.tf). The Stripe secrets are created empty and filled by hand, so
# their values never touch Terraform.

# ---- one database role per service ------------------------------------------------------------

resource "random_password" "db" {
  for_each = local.services

  length  = 32
  special = false # it goes into a URL unescaped
}

resource "aws_secretsmanager_secret" "db" {
  for_each = local.services

  name        = "${local.name}/db/${each.key}"
  description = "PostgreSQL role of the ${each.key} service (its own schema only)"
}

resource "aws_secretsmanager_secret_version" "db" {
  for_each = local.services

  secret_id = aws_secretsmanager_secret.db[each.key].id
  secret_string = jsonencode({
    username = each.value.pkg
    password = random_password.db[each.key].result
    host     = aws_db_instance.this.address
    port     = aws_db_instance.this.port
    dbname   = aws_db_instance.this.db_name
    url      = "postgresql+asyncpg://${each.value.pkg}:${random_password.db[each.key].result}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${aws_db_instance.this.db_name}?ssl=require"
  })
}

# ---- Redis ------------------------------------------------------------------------------------

resource "random_password" "redis" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "redis" {
  name        = "${local.name}/redis"
  description = "Redis AUTH token and rediss:// URL"
}

resource "aws_secretsmanager_secret_version" "redis" {
  secret_id = aws_secretsmanager_secret.redis.id
  secret_string = jsonencode({
    token = random_password.redis.result
    url   = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.this.primary_endpoint_address}:6379/0"
  })
}

# ---- Stripe (billing) -------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "stripe_secret_key" {
  name        = "${local.name}/stripe/secret-key"
  description = "Stripe secret API key (set the value with aws secretsmanager put-secret-value)"
}

resource "aws_secretsmanager_secret" "stripe_webhook_secret" {
  name        = "${local.name}/stripe/webhook-secret"
  description = "Stripe webhook signing secret (set the value with aws secretsmanager put-secret-value)"
}

# ---- OTP pepper (auth) ------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "otp_pepper" {
  name        = "${local.name}/auth/otp-pepper"
  description = "Key for the OTP code hashes (a long random string; auth refuses to start without it)"
}

# ---- number-verification pepper (messaging) -----------------------------------------------------

resource "aws_secretsmanager_secret" "number_code_pepper" {
  name        = "${local.name}/messaging/number-code-pepper"
  description = "Key for the hashes of the codes that prove a tenant owns a number (messaging refuses to start without it)"
}

# ---- OTP seal keys (auth seals, messaging opens) ------------------------------------------------

resource "aws_secretsmanager_secret" "otp_seal_keys" {
  name        = "${local.name}/otp-seal-keys"
  description = "JSON list of Fernet keys sealing OTP codes inside auth.otp.requested events; the first seals, all open (both services refuse to start with the local key)"
}

# ---- HTTP SMS gateway (messaging), only when sms_routes names "gateway" -------------------------

resource "aws_secretsmanager_secret" "sms_gateway_api_key" {
  count = local.sms_gateway_routed ? 1 : 0

  name        = "${local.name}/messaging/sms-gateway-api-key"
  description = "API key of the HTTP SMS gateway (set the value with aws secretsmanager put-secret-value)"
}

resource "aws_secretsmanager_secret" "sms_gateway_webhook_secrets" {
  count = local.sms_gateway_routed ? 1 : 0

  name        = "${local.name}/messaging/sms-gateway-webhook-secrets"
  description = "JSON list of the gateway's delivery-report signing secrets, newest first (messaging refuses to start without one)"
}

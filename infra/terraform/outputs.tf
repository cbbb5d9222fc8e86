output "alb_dns_name" {
  description = "Public DNS name of the ALB; point the API host name (the certificate's) at it."
  value       = aws_lb.this.dns_name
}

output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnets (tasks, data stores); use them for one-off tasks."
  value       = aws_subnet.private[*].id
}

output "services_security_group_id" {
  description = "Security group of the service tasks; use it for one-off tasks (migrations)."
  value       = aws_security_group.services.id
}

output "ecs_cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "ecr_repository_urls" {
  description = "Where to push each image, by service (and gateway)."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}

output "db_endpoint" {
  description = "RDS PostgreSQL endpoint (host:port)."
  value       = aws_db_instance.this.endpoint
}

output "db_master_secret_arn" {
  description = "Secret (managed by RDS) with the master user's password."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "db_service_secret_arns" {
  description = "Secret per service role: username, password and the SB_DATABASE_URL."
  value       = { for name, secret in aws_secretsmanager_secret.db : name => secret.arn }
}

output "redis_primary_endpoint" {
  description = "ElastiCache primary endpoint (TLS)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "kafka_bootstrap_brokers_tls" {
  description = "MSK bootstrap brokers on the TLS listener."
  value       = aws_msk_cluster.this.bootstrap_brokers_tls
}

output "media_bucket" {
  description = "S3 bucket for media bytes."
  value       = aws_s3_bucket.media.bucket
}

output "stripe_secret_arns" {
  description = "Stripe secrets to fill in by hand before billing can start."
  value = {
    secret_key     = aws_secretsmanager_secret.stripe_secret_key.arn
    webhook_secret = aws_secretsmanager_secret.stripe_webhook_secret.arn
  }
}

output "secrets_to_fill" {
  description = "Every secret created empty, to fill by hand (aws secretsmanager put-secret-value) before the services that read it can start: name => ARN."
  value = merge(
    {
      stripe_secret_key     = aws_secretsmanager_secret.stripe_secret_key.arn
      stripe_webhook_secret = aws_secretsmanager_secret.stripe_webhook_secret.arn
      otp_pepper            = aws_secretsmanager_secret.otp_pepper.arn
      number_code_pepper    = aws_secretsmanager_secret.number_code_pepper.arn
      otp_seal_keys         = aws_secretsmanager_secret.otp_seal_keys.arn
    },
    { for s in aws_secretsmanager_secret.sms_gateway_api_key : "sms_gateway_api_key" => s.arn },
    { for s in aws_secretsmanager_secret.sms_gateway_webhook_secrets : "sms_gateway_webhook_secrets" => s.arn },
  )
}

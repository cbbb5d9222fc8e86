variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "project" {
  description = "Name prefix for every resource."
  type        = string
  default     = "switchboard"
}

variable "environment" {
  description = "Environment name (production, staging, ...); part of every resource name."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment: lowercase letters, digits and dashes, at most 16 characters."
  }
}

# ---- network ----------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC; split into two public and two private subnets."
  type        = string
  default     = "10.40.0.0/16"
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per AZ (survives an AZ outage) instead of a single shared one."
  type        = bool
  default     = false
}

# ---- edge -------------------------------------------------------------------------------------

variable "certificate_arn" {
  description = "ACM certificate for the ALB's HTTPS listener (the public host name of the API)."
  type        = string
}

variable "alb_idle_timeout" {
  description = "ALB idle timeout in seconds; WebSocket clients must ping more often than this."
  type        = number
  default     = 300
}

variable "gateway_rate" {
  description = "Per-client rate limit of the nginx gateway (nginx limit_req rate)."
  type        = string
  default     = "50r/s"
}

variable "gateway_burst" {
  description = "Burst allowed above gateway_rate before the gateway answers 429."
  type        = number
  default     = 100
}

# ---- services ---------------------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of the service and gateway images in ECR (the repositories are immutable)."
  type        = string
}

variable "api_desired_count" {
  description = "Tasks per service API (and for the gateway)."
  type        = number
  default     = 2
}

variable "worker_desired_count" {
  description = "Tasks per service worker; Kafka partitions (3 per topic) bound useful parallelism."
  type        = number
  default     = 1
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention for the services, the gateway and MSK."
  type        = number
  default     = 30
}

# ---- data stores ------------------------------------------------------------------------------

variable "db_instance_class" {
  description = "RDS PostgreSQL instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_engine_version" {
  description = "RDS PostgreSQL engine version (major; AWS picks the minor)."
  type        = string
  default     = "16"
}

variable "db_allocated_storage" {
  description = "Initial RDS storage in GiB."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage" {
  description = "Upper bound for RDS storage autoscaling in GiB."
  type        = number
  default     = 200
}

variable "db_multi_az" {
  description = "Run RDS with a standby in the second AZ."
  type        = bool
  default     = true
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database (turn off deliberately before a destroy)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery window)."
  type        = number
  default     = 7
}

variable "redis_node_type" {
  description = "ElastiCache node type (two nodes: primary and replica)."
  type        = string
  default     = "cache.t4g.small"
}

variable "kafka_version" {
  description = "MSK Kafka version."
  type        = string
  default     = "3.7.x"
}

variable "kafka_instance_type" {
  description = "MSK broker instance type (one broker per private subnet)."
  type        = string
  default     = "kafka.t3.small"
}

variable "kafka_volume_size" {
  description = "EBS storage per MSK broker in GiB."
  type        = number
  default     = 100
}

variable "sms_routes" {
  description = "SMS provider routing by destination country, e.g. { \"*\" = [\"gateway\", \"sns\"] } (messaging SB_SMS_ROUTES)"
  type        = map(list(string))
  default     = { "*" = ["sns"] }

  validation {
    # What messaging accepts in production (MessagingSettings): the simulator is refused.
    condition     = alltrue([for name in flatten(values(var.sms_routes)) : contains(["gateway", "sns"], name)])
    error_message = "sms_routes may name only \"gateway\" and \"sns\" in a deployment."
  }
}

variable "sms_gateway_base_url" {
  description = "Base URL of the HTTP SMS gateway (messaging SB_SMS_GATEWAY_BASE_URL); needed when sms_routes names \"gateway\". Its API key and webhook secrets are secrets (secrets.tf)."
  type        = string
  default     = ""

  validation {
    condition     = var.sms_gateway_base_url == "" || startswith(var.sms_gateway_base_url, "https://")
    error_message = "sms_gateway_base_url must be an https:// URL."
  }
}

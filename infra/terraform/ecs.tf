# ECS Fargate: per service an API (behind the gateway) and a worker (outbox relay + consumers),
# plus the nginx gateway behind the public ALB. Service discovery is ECS Service Connect: every
# service is reachable inside the namespace as <name>:<port> (auth:8101, ...), the same names the
# compose file uses, so the gateway image runs here with its defaults. Service Connect's
# addresses stay put when tasks are replaced, which matters because nginx resolves its upstream
# names only once, at start.

locals {
  # pkg: the Python package (module paths in the commands); cpu/memory: Fargate task size.
  services = {
    auth          = { port = 8101, pkg = "auth", cpu = 512, memory = 1024 }
    messaging     = { port = 8102, pkg = "messaging", cpu = 512, memory = 1024 }
    chat          = { port = 8103, pkg = "chat", cpu = 512, memory = 1024 }
    media         = { port = 8104, pkg = "media", cpu = 512, memory = 1024 }
    billing       = { port = 8105, pkg = "billing", cpu = 256, memory = 512 }
    provider-sync = { port = 8106, pkg = "provider_sync", cpu = 256, memory = 512 }
  }

  gateway_port     = 8080
  service_port_min = min([for s in local.services : s.port]...)
  service_port_max = max([for s in local.services : s.port]...)

  images = toset(concat(keys(local.services), ["gateway"]))

  common_environment = {
    SB_ENVIRONMENT     = "production"
    SB_KAFKA_BOOTSTRAP = aws_msk_cluster.this.bootstrap_brokers_tls
    SB_JWKS_URL        = "http://auth:8101/.well-known/jwks.json"
  }

  # Messaging sends through the HTTP SMS gateway (and needs its URL, key and webhook secrets).
  sms_gateway_routed = contains(flatten(values(var.sms_routes)), "gateway")

  # Settings only some services read. The names follow the SB_ prefix convention of
  # common.settings; the services must define matching fields.
  extra_environment = {
    media = { SB_MEDIA_BUCKET = aws_s3_bucket.media.bucket }
    # The SMS providers a deployment routes to (the local simulator is refused in production).
    messaging = merge(
      { SB_SMS_ROUTES = jsonencode(var.sms_routes) },
      local.sms_gateway_routed ? { SB_SMS_GATEWAY_BASE_URL = var.sms_gateway_base_url } : {},
    )
  }

  service_environment = {
    for name in keys(local.services) : name => [
      for key, value in merge(local.common_environment, lookup(local.extra_environment, name, {})) :
      { name = key, value = value }
    ]
  }

  # Injected by ECS from Secrets Manager at task start ("<arn>:<json key>::").
  service_secrets = {
    for name in keys(local.services) : name => concat(
      [
        { name = "SB_DATABASE_URL", valueFrom = "${aws_secretsmanager_secret.db[name].arn}:url::" },
        { name = "SB_REDIS_URL", valueFrom = "${aws_secretsmanager_secret.redis.arn}:url::" },
      ],
      name == "billing" ? [
        { name = "SB_STRIPE_API_KEY", valueFrom = aws_secretsmanager_secret.stripe_secret_key.arn },
        # The value is a JSON list of signing secrets, e.g. ["whsec_new","whsec_old"] during rotation.
        { name = "SB_STRIPE_WEBHOOK_SECRETS", valueFrom = aws_secretsmanager_secret.stripe_webhook_secret.arn },
      ] : [],
      name == "auth" ? [
        { name = "SB_OTP_PEPPER", valueFrom = aws_secretsmanager_secret.otp_pepper.arn },
      ] : [],
      name == "messaging" ? [
        { name = "SB_SMS_NUMBER_CODE_PEPPER", valueFrom = aws_secretsmanager_secret.number_code_pepper.arn },
      ] : [],
      # Only when SMS go through the HTTP gateway: ECS cannot start a task whose secret has no
      # value yet, and these are filled by hand.
      name == "messaging" && local.sms_gateway_routed ? [
        { name = "SB_SMS_GATEWAY_API_KEY", valueFrom = aws_secretsmanager_secret.sms_gateway_api_key[0].arn },
        # A JSON list of webhook signing secrets, e.g. ["new","old"] during rotation.
        { name = "SB_SMS_GATEWAY_WEBHOOK_SECRETS", valueFrom = aws_secretsmanager_secret.sms_gateway_webhook_secrets[0].arn },
      ] : [],
      # Auth seals OTP codes in their events, messaging opens them: the one secret both hold.
      contains(["auth", "messaging"], name) ? [
        { name = "SB_OTP_SEAL_KEYS", valueFrom = aws_secretsmanager_secret.otp_seal_keys.arn },
      ] : [],
    )
  }
}

# ---- images and logs --------------------------------------------------------------------------

resource "aws_ecr_repository" "this" {
  for_each = local.images

  name                 = "${var.project}/${each.key}"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }
}

resource "aws_cloudwatch_log_group" "this" {
  for_each = local.images

  name              = "/ecs/${local.name}/${each.key}"
  retention_in_days = var.log_retention_days
}

# ---- IAM --------------------------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Used by ECS itself: pull images, write logs, read the secrets injected into the containers.
resource "aws_iam_role" "execution" {
  name               = "${local.name}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    actions = ["secretsmanager:GetSecretValue"]
    resources = concat(
      [for s in aws_secretsmanager_secret.db : s.arn],
      [
        aws_secretsmanager_secret.redis.arn,
        aws_secretsmanager_secret.stripe_secret_key.arn,
        aws_secretsmanager_secret.stripe_webhook_secret.arn,
        aws_secretsmanager_secret.otp_pepper.arn,
        aws_secretsmanager_secret.number_code_pepper.arn,
        aws_secretsmanager_secret.otp_seal_keys.arn,
      ],
      [for s in aws_secretsmanager_secret.sms_gateway_api_key : s.arn],
      [for s in aws_secretsmanager_secret.sms_gateway_webhook_secrets : s.arn],
    )
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "read-service-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

# Used by the application code: one role per service (API and worker share it), so a grant to
# one service is not a grant to all.
resource "aws_iam_role" "task" {
  for_each = local.services

  name               = "${local.name}-${each.key}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "media_bucket" {
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.media.arn}/*"]
  }

  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.media.arn]
  }
}

resource "aws_iam_role_policy" "media_bucket" {
  name   = "media-bucket"
  role   = aws_iam_role.task["media"].id
  policy = data.aws_iam_policy_document.media_bucket.json
}

resource "aws_iam_role" "gateway_task" {
  name               = "${local.name}-gateway-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

# ---- cluster ----------------------------------------------------------------------------------

resource "aws_service_discovery_http_namespace" "this" {
  name        = local.name
  description = "Service Connect namespace of ${local.name}"
}

resource "aws_ecs_cluster" "this" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  service_connect_defaults {
    namespace = aws_service_discovery_http_namespace.this.arn
  }
}

# ---- service APIs -----------------------------------------------------------------------------

resource "aws_ecs_task_definition" "api" {
  for_each = local.services

  family                   = "${local.name}-${each.key}-api"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([
    {
      name      = "api"
      image     = "${aws_ecr_repository.this[each.key].repository_url}:${var.image_tag}"
      essential = true
      command   = ["uvicorn", "${each.value.pkg}.app:create_app", "--factory", "--host", "0.0.0.0", "--port", tostring(each.value.port)]
      # The port's name is what Service Connect publishes.
      portMappings = [{ name = "http", containerPort = each.value.port, protocol = "tcp", appProtocol = "http" }]
      environment  = local.service_environment[each.key]
      secrets      = local.service_secrets[each.key]
      healthCheck = {
        command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${each.value.port}/health', timeout=3)"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this[each.key].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "api"
        }
      }
    }
  ])
}

resource "aws_ecs_service" "api" {
  for_each = local.services

  name            = "${each.key}-api"
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.api[each.key].arn
  desired_count   = var.api_desired_count
  launch_type     = "FARGATE"
  propagate_tags  = "SERVICE"

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.services.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  service_connect_configuration {
    enabled   = true
    namespace = aws_service_discovery_http_namespace.this.arn

    service {
      port_name      = "http"
      discovery_name = each.key

      client_alias {
        dns_name = each.key
        port     = each.value.port
      }
    }
  }
}

# ---- service workers --------------------------------------------------------------------------

resource "aws_ecs_task_definition" "worker" {
  for_each = local.services

  family                   = "${local.name}-${each.key}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([
    {
      name        = "worker"
      image       = "${aws_ecr_repository.this[each.key].repository_url}:${var.image_tag}"
      essential   = true
      command     = ["python", "-m", "${each.value.pkg}.worker"]
      environment = local.service_environment[each.key]
      secrets     = local.service_secrets[each.key]
      # Give the consumer time to finish its event and commit offsets on SIGTERM.
      stopTimeout = 60
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this[each.key].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "worker"
        }
      }
    }
  ])
}

resource "aws_ecs_service" "worker" {
  for_each = local.services

  name            = "${each.key}-worker"
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.worker[each.key].arn
  desired_count   = var.worker_desired_count
  launch_type     = "FARGATE"
  propagate_tags  = "SERVICE"

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.services.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # Client only: a worker may read auth's JWKS but serves nothing.
  service_connect_configuration {
    enabled   = true
    namespace = aws_service_discovery_http_namespace.this.arn
  }
}

# ---- gateway ----------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${local.name}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.gateway_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([
    {
      name         = "gateway"
      image        = "${aws_ecr_repository.this["gateway"].repository_url}:${var.image_tag}"
      essential    = true
      portMappings = [{ name = "http", containerPort = local.gateway_port, protocol = "tcp", appProtocol = "http" }]
      # Upstreams keep the image defaults (auth:8101, ...): Service Connect provides those names.
      environment = [
        { name = "LISTEN", value = "0.0.0.0:${local.gateway_port}" },
        { name = "RATE", value = var.gateway_rate },
        { name = "BURST", value = tostring(var.gateway_burst) },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this["gateway"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "gateway"
        }
      }
    }
  ])
}

resource "aws_ecs_service" "gateway" {
  name                              = "gateway"
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  desired_count                     = var.api_desired_count
  launch_type                       = "FARGATE"
  propagate_tags                    = "SERVICE"
  health_check_grace_period_seconds = 30

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.gateway.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateway.arn
    container_name   = "gateway"
    container_port   = local.gateway_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  service_connect_configuration {
    enabled   = true
    namespace = aws_service_discovery_http_namespace.this.arn
  }

  # nginx refuses to start while an upstream name does not resolve: publish the APIs first.
  depends_on = [aws_ecs_service.api, aws_lb_listener.https]
}

# ---- public ALB -------------------------------------------------------------------------------

resource "aws_lb" "this" {
  name                       = local.name
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = aws_subnet.public[*].id
  security_groups            = [aws_security_group.alb.id]
  idle_timeout               = var.alb_idle_timeout
  drop_invalid_header_fields = true
}

resource "aws_lb_target_group" "gateway" {
  # Target group names stop at 32 characters.
  name                 = "${local.name}-gw"
  port                 = local.gateway_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = aws_vpc.this.id
  deregistration_delay = 30

  health_check {
    path                = "/health"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}

# The gateway's /_svc/<service>/ paths (health, metrics, OpenAPI of each service) are for the
# local stack and operators inside the VPC, not for the internet.
resource "aws_lb_listener_rule" "hide_internal" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  condition {
    path_pattern {
      values = ["/_svc/*"]
    }
  }

  action {
    type = "fixed-response"

    fixed_response {
      content_type = "application/json"
      status_code  = "404"
      message_body = jsonencode({ success = false, message = "No route for this path", code = "NOT_FOUND", details = null })
    }
  }
}

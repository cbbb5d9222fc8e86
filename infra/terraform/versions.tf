terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
    # Generates the database and Redis passwords stored in Secrets Manager.
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # The state holds the generated passwords: keep it in an encrypted, access-controlled backend,
  # for example (filled in per environment with `terraform init -backend-config=...`):
  #
  # backend "s3" {
  #   bucket       = "<state bucket>"
  #   key          = "switchboard/<environment>.tfstate"
  #   region       = "<region>"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}

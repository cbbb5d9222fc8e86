#!/usr/bin/env bash
# Install what the local stack needs, idempotently, on a fresh Debian machine (root, no Docker):
# PostgreSQL, Redis, nginx, Java + Maven (apt-get); uv and the Python workspace (PyPI);
# the Apache Kafka broker jars (Maven Central). Only what is missing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOCAL="$ROOT/.local"
mkdir -p "$LOCAL"

need_apt=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing with apt-get: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian's packages try to start system-wide daemons on their default ports; the local
  # stack runs its own on other ports, so stop any that started.
  for svc in postgresql redis-server nginx; do service "$svc" stop >/dev/null 2>&1 || true; done
fi

if ! command -v uv >/dev/null; then
  echo "installing uv"
  python3 -m pip install -q uv
fi
uv sync --locked --python python3.11 -q

if ! ls "$LOCAL"/kafka/libs/kafka_2.13-*.jar >/dev/null 2>&1; then
  echo "fetching the Kafka broker jars from Maven Central"
  mkdir -p "$LOCAL/kafka/libs"
  mvn -q -B -f scripts/kafka/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$LOCAL/kafka/libs" -DincludeScope=runtime
fi
echo "install: ok"

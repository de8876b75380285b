#!/usr/bin/env bash
# Says exactly which system package is missing and how to install it, before anything else runs.
# Usage: infra/preflight.sh [python]
set -u
py=${1:-python3}
missing=()
if ! command -v "$py" >/dev/null || ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  missing+=("Python 3.11+ ($py): apt-get install -y python3 python3-venv")
fi
if ! command -v java >/dev/null; then
  missing+=("Java 17+: apt-get install -y openjdk-17-jre-headless")
else
  major=$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1)
  if [ "${major:-0}" -lt 17 ]; then
    missing+=("Java 17+ (found ${major:-unknown}): apt-get install -y openjdk-17-jre-headless")
  fi
fi
command -v mvn >/dev/null || missing+=("Maven: apt-get install -y maven")
command -v redis-server >/dev/null || missing+=("Redis: apt-get install -y redis-server")
if [ ${#missing[@]} -gt 0 ]; then
  echo "StreamRec needs these system packages first:" >&2
  for m in "${missing[@]}"; do echo "  - $m" >&2; done
  echo "(.ci/run installs them with apt-get)" >&2
  exit 2
fi

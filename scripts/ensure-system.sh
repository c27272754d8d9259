#!/usr/bin/env bash
# Installs the system packages the fabric needs when they are missing (Debian/Ubuntu, apt).
# Idempotent and quick when everything is there. Usage: scripts/ensure-system.sh [PACKAGE...]
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

for pkg in "${@:-nats-server}"; do
  case "$pkg" in
    nats-server) have_cmd nats-server || need+=(nats-server) ;;
    *) dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg") ;;
  esac
done

if ! have_cmd node; then
  echo "error: Node.js >= 20 is required (https://nodejs.org); Debian's nodejs package is too old." >&2
  exit 1
fi
node -e 'const [M]=process.versions.node.split(".").map(Number); if (M < 20) { console.error(`error: Node.js >= 20 is required, found ${process.versions.node}`); process.exit(1); }'

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing system packages: ${need[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Brings a checkout to a runnable state: system packages, npm dependencies, generated code, build.
# Each step is skipped when already done, so a second run takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-system.sh nats-server

# npm dependencies: install when node_modules is missing or older than the lockfile.
stamp=node_modules/.fabric-lock-stamp
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  echo "installing npm dependencies" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > "$stamp"
fi

# Generated code from proto/, then the TypeScript build (incremental).
proto_sum=$(cat proto/fabric/v1/*.proto scripts/gen-proto.mjs | sha256sum | cut -d' ' -f1)
if [ ! -f proto/gen/.stamp ] || [ "$(cat proto/gen/.stamp)" != "$proto_sum" ]; then
  node scripts/gen-proto.mjs
  echo "$proto_sum" > proto/gen/.stamp
fi
npx --no-install tsc -p tsconfig.build.json
node scripts/copy-assets.mjs
# The web dashboard's bundle (dist/ui/), which the broker serves at /ui/.
node scripts/build-ui.mjs

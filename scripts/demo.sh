#!/usr/bin/env bash
# The demo: set up what is missing, then run a local NATS, the broker and an endpoint, register a
# JS function and a shell function, run 1,000 tasks and print a summary. Stops all it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/examples/demo.js "$@"

#!/usr/bin/env bash
# Benchmarks: set up what is missing, then run `node dist/bench/run.js [NAME...]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node dist/bench/run.js "$@"

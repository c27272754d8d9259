#!/usr/bin/env bash
# The test command: set up what is missing, then run the whole suite against real services that the
# harness starts on free ports and temporary directories. Ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npx --no-install vitest run "$@"

#!/usr/bin/env bash
# The test command: set up what is missing, then run the whole suite against real services that the
# harness starts on free ports and temporary directories. Ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Everything the integration tests start for real: Docker and Podman engines, a one-node Slurm,
# Python's grpcio (an independent client of the API), the science stack the Python
# functions' tests compute with (numpy, scipy, scikit-image), pip, which installs the Python
# client (clients/python) in its test, curl and jq, which run docs/http.md's walk-through, and
# Chromium, the browser the dashboard's test drives (playwright-core, never a downloaded browser).
# Installed up front (once) so no test spends its own timeout on apt.
bash scripts/ensure-system.sh nats-server docker.io podman catatonit slurm-wlm munge busybox-static python3-grpcio curl jq \
  chromium python3-numpy python3-scipy python3-skimage python3-pip
# The whole suite starts with the typecheck, lint, format and dependency checks: a broken rule fails
# the run (`npm test -- FILE` runs just that file).
if [ "$#" -eq 0 ]; then npm run --silent check >&2; fi
exec npx --no-install vitest run "$@"

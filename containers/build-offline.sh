#!/usr/bin/env bash
# Builds the worker images without any registry, from this host's own runtimes: FROM scratch plus
# node, the libraries ldd lists, the compiled worker and its npm packages; the shell image adds a
# static busybox; the Python image is this host's /usr/bin/python3, its standard library, the
# packages numpy, scipy and scikit-image load, their libraries and the Python runtime. Usage:
#   bash containers/build-offline.sh                           # Docker, /var/run/docker.sock
#   bash containers/build-offline.sh --engine podman --socket /run/podman/podman.sock
#   bash containers/build-offline.sh --kinds python --python-packages numpy,scipy,h5py
#   bash containers/build-offline.sh --stage DIR               # only stage the worker (for Dockerfile)
# Images: fabric-worker:VERSION (JS functions), fabric-worker-shell:VERSION (shell functions),
# fabric-worker-python:VERSION (Python functions).
# Rebuilt only when their content changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec node dist/devkit/worker-images.js "$@"

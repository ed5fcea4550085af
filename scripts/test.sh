#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs every test of the
# workspace (real SoftHSM tokens in temp dirs, real TLS, servers on random loopback ports, a
# throwaway PostgreSQL for the store suite), then drives the kms-connector with Alibaba's own
# Python SDKs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo test --workspace --all-targets "$@"
scripts/test-python.sh

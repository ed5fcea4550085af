#!/usr/bin/env bash
# The README's first command: sets up and starts the stack on this machine (embedded default:
# SoftHSM + SQLite). Everything it makes lives under .state/. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
state="$PWD/.state"

if [ "${1:-}" = "stop" ]; then
  echo "nothing is running yet: the services land with the EKM, proxy and kms-connector issues"
  exit 0
fi

scripts/deps.sh
cargo build --release --workspace
mkdir -p "$state"
target/release/hyok-dev-pki init --out "$state/pki"
echo
echo "Built: ekm, xki-proxy, kms-connector, hyok-dev-pki (target/release/)."
echo "Dev PKI: $state/pki (CA, server and client certificates for every hop)."
echo "Next (as the services land): SoftHSM token in $state/softhsm, ekm + xki-proxy +"
echo "kms-connector started in the background with logs in $state/logs, an external key minted"
echo "through the proxy, a KMS key bound to it, then Encrypt -> Decrypt -> GenerateDataKey."

#!/usr/bin/env bash
# XKI proxy load benchmark (BENCHMARKS.md): encrypt of 32 B and 4 KiB at 1, 8, 32 and 128
# connections, with the in-process EKM backend and with the remote EKM (HTTPS + mTLS), then a
# 4x overload run. Loopback only, bounded in time; everything lives in .state/bench/ and is
# stopped at the end.
#
#   scripts/bench-proxy.sh [seconds-per-run]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
secs=${1:-5}
state="$root/.state/bench"
bin="$root/target/release"
region="us-east-1"
ekm_port=29443 ekm_live=29080 proxy_port=28443 proxy_ops=29180 proxy_admin=29181

scripts/deps.sh
cargo build --release --quiet -p ekm -p xki-proxy -p certs
rm -rf "$state" && mkdir -p "$state"/{secrets,tokens,logs}
"$bin/hyok-dev-pki" init --out "$state/pki" >/dev/null
(umask 077; head -c 24 /dev/urandom | base64 > "$state/secrets/pin"; head -c 24 /dev/urandom | base64 > "$state/secrets/so-pin"; head -c 24 /dev/urandom | base64 > "$state/secrets/admin")
printf 'directories.tokendir = %s\nlog.level = ERROR\n' "$state/tokens" > "$state/softhsm2.conf"
export SOFTHSM2_CONF="$state/softhsm2.conf"

cat > "$state/ekm.toml" <<EOF
[hsm]
token_label = "bench"
pin_file = "$state/secrets/pin"
queue_capacity = ${EKM_QUEUE:-256}
[server]
listen = "127.0.0.1:$ekm_port"
liveness_listen = "127.0.0.1:$ekm_live"
tls_cert_file = "$state/pki/ekm.pem"
tls_key_file = "$state/pki/ekm.key"
client_ca_file = "$state/pki/ca.pem"
allowed_client_names = ["xki-proxy"]
EOF
"$bin/ekm" --config "$state/ekm.toml" init-token --so-pin-file "$state/secrets/so-pin" >/dev/null
"$bin/xki-proxy" credentials new --endpoint "https://localhost:$proxy_port" --server-cert "$state/pki/xki-proxy.pem" \
  --secret-out "$state/secrets/xki" --out "$state/connection.json" 2>/dev/null
ak=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["XksProxyAuthenticationCredential"]["AccessKeyId"])' "$state/connection.json")

proxy_config() { # backend section
  cat > "$state/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$proxy_port"
cert_file = "$state/pki/xki-proxy.pem"
key_file = "$state/pki/xki-proxy.key"
[ops]
listen = "127.0.0.1:$proxy_ops"
[admin]
listen = "127.0.0.1:$proxy_admin"
token = { file = "$state/secrets/admin" }
[backend]
$1
[[key_store]]
regions = ["$region"]
credentials = [{ access_key_id = "$ak", secret = { file = "$state/secrets/xki" } }]
EOF
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_ready() { local d=$((SECONDS + 30)); until curl -fsS -o /dev/null "$1"; do [ $SECONDS -lt $d ] || { echo "not ready: $1" >&2; exit 1; }; sleep 0.2; done; }

run_matrix() { # label
  local key
  key=$("$bin/xki-proxy" keys --config "$state/proxy.toml" --json create | python3 -c 'import json,sys; print(json.load(sys.stdin)["externalKeyId"])')
  for size in 32 4096; do
    for conns in 1 8 32 128; do
      printf '%-10s ' "$1"
      "$bin/xki-loadgen" --url "https://localhost:$proxy_port" --key-id "$key" --access-key-id "$ak" \
        --secret-file "$state/secrets/xki" --region "$region" --ca "$state/pki/ca.pem" \
        --connections "$conns" --plaintext-bytes "$size" --duration "$secs" --warmup 1
    done
  done
  printf '%-10s overload: ' "$1"
  "$bin/xki-loadgen" --url "https://localhost:$proxy_port" --key-id "$key" --access-key-id "$ak" \
    --secret-file "$state/secrets/xki" --region "$region" --ca "$state/pki/ca.pem" \
    --connections 512 --plaintext-bytes 32 --duration "$secs" --warmup 1
}

echo "machine: $(nproc) vCPU, $(uname -sr), $(softhsm2-util --version 2>/dev/null | head -1 | sed 's/^/SoftHSM /')"

proxy_config "kind = \"in-process\"
ekm_config = \"$state/ekm.toml\""
"$bin/xki-proxy" serve --config "$state/proxy.toml" >"$state/logs/proxy-inproc.log" 2>&1 & pids+=($!)
wait_ready "http://127.0.0.1:$proxy_ops/ready"
run_matrix in-process
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

"$bin/ekm" --config "$state/ekm.toml" serve >"$state/logs/ekm.log" 2>&1 & pids+=($!)
wait_ready "http://127.0.0.1:$ekm_live/ready"
proxy_config "kind = \"remote\"
url = \"https://localhost:$ekm_port\"
ca_file = \"$state/pki/ca.pem\"
cert_file = \"$state/pki/xki-proxy-client.pem\"
key_file = \"$state/pki/xki-proxy-client.key\""
"$bin/xki-proxy" serve --config "$state/proxy.toml" >"$state/logs/proxy-remote.log" 2>&1 & pids+=($!)
wait_ready "http://127.0.0.1:$proxy_ops/ready"
run_matrix remote

#!/usr/bin/env bash
# KMS connector load benchmark (BENCHMARKS.md): Encrypt of 32 B through the OpenAPI over HTTPS
# (ACS3-HMAC-SHA256, 32 keep-alive connections, `kms-loadgen`) on a software, a hardware and an
# external key, in 3 interleaved rounds (software, hardware, external, software, ...), then a
# table of medians and the hardware/software ratio. The external instance talks to an
# xki-proxy with the in-process EKM backend (proxy + PKCS#11 pool in one process). Loopback
# only, bounded in time; everything lives in .state/bench-kms/ and is stopped at the end.
#
#   scripts/bench-kms.sh [seconds-per-run]      (default 5, after 1 s of warm-up)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
secs=${1:-5}
rounds=3
state="$root/.state/bench-kms"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
region="cn-hangzhou" account_id="1234567890123456"
kms_port=36080 kms_tls_port=36443 proxy_port=36543 proxy_ops=36180
sw_instance="kst-hzz68d1fd85benchsoft1" hw_instance="kst-hzz68d1fd85benchhard1" ext_instance="kst-hzz68d1fd85benchextn1"
ak="LTAI5tBenchKmsLoadgen01"

scripts/deps.sh
cargo build --release --quiet -p ekm -p xki-proxy -p certs -p kms-connector
rm -rf "$state" && mkdir -p "$state"/{secrets,tokens,logs}
"$bin/hyok-dev-pki" init --out "$state/pki" >/dev/null
(
  umask 077
  for s in ekm-pin ekm-so-pin hw-pin hw-so-pin admin kms-ak; do head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$state/secrets/$s"; done
  head -c 32 /dev/urandom > "$state/secrets/root.key"
)
printf 'directories.tokendir = %s\nlog.level = ERROR\n' "$state/tokens" > "$state/softhsm2.conf"
export SOFTHSM2_CONF="$state/softhsm2.conf"

ekm_config() { # file label pin-file
  cat > "$1" <<EOF
[hsm]
token_label = "$2"
pin_file = "$3"
EOF
}
# Two tokens: the EKM's (behind the proxy) and the hardware instance's own.
ekm_config "$state/ekm.toml" bench-kms-ekm "$state/secrets/ekm-pin"
ekm_config "$state/hw-token.toml" bench-kms-hw "$state/secrets/hw-pin"
"$bin/ekm" --config "$state/ekm.toml" init-token --so-pin-file "$state/secrets/ekm-so-pin" >/dev/null
"$bin/ekm" --config "$state/hw-token.toml" init-token --so-pin-file "$state/secrets/hw-so-pin" >/dev/null

"$bin/xki-proxy" credentials new --endpoint "https://localhost:$proxy_port" --prefix "" \
  --server-cert "$state/pki/xki-proxy.pem" --secret-out "$state/secrets/xki" --out "$state/xki-connection.json" 2>/dev/null
xki_ak=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["XksProxyAuthenticationCredential"]["AccessKeyId"])' "$state/xki-connection.json")
cat > "$state/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$proxy_port"
cert_file = "$state/pki/xki-proxy.pem"
key_file = "$state/pki/xki-proxy.key"
[ops]
listen = "127.0.0.1:$proxy_ops"
admin_token = { file = "$state/secrets/admin" }
[backend]
kind = "in-process"
ekm_config = "$state/ekm.toml"
[[key_store]]
prefix = ""
regions = ["$region"]
credentials = [{ access_key_id = "$xki_ak", secret = { file = "$state/secrets/xki" } }]
EOF

cat > "$state/kms-connector.toml" <<EOF
default_instance = "$sw_instance"
[server]
listen = "127.0.0.1:$kms_port"
[server.tls]
listen = "127.0.0.1:$kms_tls_port"
cert_file = "$state/pki/kms-connector.pem"
key_file = "$state/pki/kms-connector.key"
[kms]
region = "$region"
account_id = "$account_id"
# The per-account limit (default 1000 req/s) would cap the bench, not the server.
qps = 1000000
[database]
url = "sqlite://$state/kms-connector.db"
[root_key]
file = "$state/secrets/root.key"
[[access_keys]]
access_key_id = "$ak"
secret = { file = "$state/secrets/kms-ak" }
principal = "acs:ram::$account_id:root"
[[instances]]
id = "$sw_instance"
kind = "software"
name = "bench-software"
[[instances]]
id = "$hw_instance"
kind = "hardware"
name = "bench-hardware"
[instances.hardware]
token_label = "bench-kms-hw"
pin = { file = "$state/secrets/hw-pin" }
[[instances]]
id = "$ext_instance"
kind = "external"
name = "bench-external"
[instances.external]
settings_file = "$state/xki-connection.json"
ca_file = "$state/pki/ca.pem"
EOF

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_http() { local d=$((SECONDS + 30)); until curl -sS -o /dev/null "$1" 2>/dev/null; do [ $SECONDS -lt $d ] || { echo "not ready: $1" >&2; exit 1; }; sleep 0.2; done; }
field() { python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(v)' "$1"; }
kms() { "$bin/kms-connector" --config "$state/kms-connector.toml" "$@"; }
api() { curl -sS "$(kms sign-url "$@")"; }
# utime + stime of a process, in clock ticks (1/100 s).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

"$bin/xki-proxy" serve --config "$state/proxy.toml" >"$state/logs/proxy.log" 2>&1 & pids+=($!); proxy_pid=$!
wait_http "http://127.0.0.1:$proxy_ops/ready"
"$bin/kms-connector" --config "$state/kms-connector.toml" serve >"$state/logs/kms-connector.log" 2>&1 & pids+=($!); kms_pid=$!
wait_http "http://127.0.0.1:$kms_port/"

kms call ConnectKmsInstance KmsInstanceId="$ext_instance" >/dev/null
deadline=$((SECONDS + 30))
until [ "$(api GetKmsInstance KmsInstanceId="$ext_instance" | field KmsInstance.Status 2>/dev/null)" = Connected ]; do
  [ $SECONDS -lt $deadline ] || { echo "the external instance did not connect" >&2; api GetKmsInstance KmsInstanceId="$ext_instance" >&2; exit 1; }
  sleep 0.5
done
external_key_id=$("$bin/xki-proxy" keys --config "$state/proxy.toml" --json create --description bench-kms | field externalKeyId)
declare -A key
key[software]=$(api CreateKey DKMSInstanceId="$sw_instance" | field KeyMetadata.KeyId)
key[hardware]=$(api CreateKey DKMSInstanceId="$hw_instance" | field KeyMetadata.KeyId)
key[external]=$(api CreateKey DKMSInstanceId="$ext_instance" ExternalKeyId="$external_key_id" | field KeyMetadata.KeyId)

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(uname -sr), $(softhsm2-util --version 2>/dev/null | head -1 | sed 's/^/SoftHSM /')"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+dirty')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "keys: software ${key[software]}, hardware ${key[hardware]}, external ${key[external]} (External Key ID $external_key_id)"
results="$state/results.jsonl"
: > "$results"
for round in $(seq 1 $rounds); do
  for kind in software hardware external; do
    k0=$(cpu_ticks "$kms_pid") p0=$(cpu_ticks "$proxy_pid")
    line=$("$bin/kms-loadgen" --url "https://127.0.0.1:$kms_tls_port" --ca-file "$state/pki/ca.pem" \
      --access-key-id "$ak" --secret-file "$state/secrets/kms-ak" --action encrypt --key-id "${key[$kind]}" \
      --plaintext-bytes 32 --connections 32 --duration "$secs" --warmup 1 --json)
    # The servers' CPU over the whole run (warm-up included), for the per-request comparison.
    printf '{"round":%s,"kind":"%s","window_s":%s,"kms_ticks":%s,"proxy_ticks":%s,"run":%s}\n' "$round" "$kind" \
      "$((secs + 1))" "$(($(cpu_ticks "$kms_pid") - k0))" "$(($(cpu_ticks "$proxy_pid") - p0))" "$line" >> "$results"
    printf 'round %s %-8s %s\n' "$round" "$kind" "$(printf '%s' "$line" | python3 -c 'import json,sys
r = json.load(sys.stdin)
print("{:8.0f} req/s  p50 {:.2f} ms  p99 {:.2f} ms  loadgen {:.0f} µs CPU/req  {}".format(
    r["rps"], r["p50_ms"], r["p99_ms"], r["loadgen_cpu_us_per_request"], r["outcomes"]))')"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
med = lambda kind, field: statistics.median(r["run"][field] for r in runs if r["kind"] == kind)
# Server CPU per request, approximate: ticks over warm-up + run, divided by that window's
# requests at the measured rate.
per_req = lambda r, ticks: r[ticks] * 1e4 / (r["run"]["rps"] * r["window_s"])
med_cpu = lambda kind, ticks: statistics.median(per_req(r, ticks) for r in runs if r["kind"] == kind)
print()
print("| key | req/s | p50 ms | p99 ms | kms-loadgen CPU µs/req | kms-connector CPU µs/req | xki-proxy CPU µs/req | outcomes (all rounds) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for kind in ("software", "hardware", "external"):
    outcomes = {}
    for r in runs:
        if r["kind"] == kind:
            for k, v in r["run"]["outcomes"].items():
                outcomes[k] = outcomes.get(k, 0) + v
    print(f"| {kind} | {med(kind, 'rps'):,.0f} | {med(kind, 'p50_ms'):.2f} | {med(kind, 'p99_ms'):.2f} "
          f"| {med(kind, 'loadgen_cpu_us_per_request'):.0f} | ~{med_cpu(kind, 'kms_ticks'):.0f} | ~{med_cpu(kind, 'proxy_ticks'):.0f} | {', '.join(f'{v:,} × {k}' for k, v in sorted(outcomes.items()))} |")
ratios = [h["run"]["rps"] / s["run"]["rps"] for s, h in zip(
    (r for r in runs if r["kind"] == "software"), (r for r in runs if r["kind"] == "hardware"))]
print()
print(f"hardware/software req/s: median of medians {med('hardware', 'rps') / med('software', 'rps'):.0%}; "
      f"per round {', '.join(f'{x:.0%}' for x in ratios)} (target >= 70 %)")
EOF

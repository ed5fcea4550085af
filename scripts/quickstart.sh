#!/usr/bin/env bash
# The README's first command: sets up and starts the HYOK stack on this machine with the
# embedded defaults (SoftHSM2 token, dev PKI), mints an external key on the XKI side and
# proves the path works with signed XKI calls. Everything lives under .state/; running it
# again reuses what is there and restarts nothing that is healthy.
#
#   scripts/quickstart.sh         set up (if needed), start, demonstrate
#   scripts/quickstart.sh stop    stop what it started
#   scripts/quickstart.sh status  show what runs
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
state="$root/.state"
bin="$root/target/release"
region="cn-hangzhou"
ekm_port=19443 ekm_live_port=19080 proxy_port=18443 proxy_ops_port=19180

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_one() {
  local name=$1 pidfile="$state/run/$1.pid"
  if pid_alive "$pidfile"; then
    kill "$(cat "$pidfile")" && echo "stopped $name (pid $(cat "$pidfile"))"
  fi
  rm -f "$pidfile"
}

case "${1:-start}" in
  stop)
    stop_one xki-proxy
    stop_one ekm
    exit 0
    ;;
  status)
    for name in ekm xki-proxy; do
      if pid_alive "$state/run/$name.pid"; then echo "$name: running (pid $(cat "$state/run/$name.pid"))"; else echo "$name: stopped"; fi
    done
    exit 0
    ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

say "system packages"
scripts/deps.sh

say "build (release)"
cargo build --release --quiet -p ekm -p xki-proxy -p certs

mkdir -p "$state"/{run,logs,secrets,softhsm/tokens}
chmod 700 "$state/secrets"

say "dev PKI in .state/pki"
"$bin/hyok-dev-pki" init --out "$state/pki" | sed 's/^/    /'

# Secrets are files (mode 0600), never command-line arguments or config values.
new_secret() { # file, bytes
  [ -s "$1" ] || (umask 077 && head -c "$2" /dev/urandom | base64 | tr -d '\n/+=' | cut -c1-32 > "$1")
}
new_secret "$state/secrets/ekm-user-pin" 32
new_secret "$state/secrets/ekm-so-pin" 32
new_secret "$state/secrets/proxy-admin-token" 48

cat > "$state/softhsm/softhsm2.conf" <<EOF
directories.tokendir = $state/softhsm/tokens
objectstore.backend = file
log.level = ERROR
EOF
export SOFTHSM2_CONF="$state/softhsm/softhsm2.conf"

cat > "$state/ekm.toml" <<EOF
# Written by scripts/quickstart.sh. EKM__SECTION__KEY variables override any key.
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "hyok-dev"
pin_file = "$state/secrets/ekm-user-pin"
vendor = "softhsm"

[server]
listen = "127.0.0.1:$ekm_port"
liveness_listen = "127.0.0.1:$ekm_live_port"
tls_cert_file = "$state/pki/ekm.pem"
tls_key_file = "$state/pki/ekm.key"
client_ca_file = "$state/pki/ca.pem"
EOF

if [ ! -f "$state/softhsm/.initialized" ]; then
  say "SoftHSM token 'hyok-dev' in .state/softhsm"
  "$bin/ekm" --config "$state/ekm.toml" init-token --so-pin-file "$state/secrets/ekm-so-pin" | sed 's/^/    /'
  touch "$state/softhsm/.initialized"
fi

if [ ! -f "$state/xki-connection.json" ]; then
  say "XKI credentials (the settings a KMS external key instance needs)"
  "$bin/xki-proxy" credentials new --endpoint "https://localhost:$proxy_port" --prefix "" \
    --server-cert "$state/pki/xki-proxy.pem" --secret-out "$state/secrets/xki-secret" \
    --out "$state/xki-connection.json" 2>/dev/null
fi
access_key_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["XksProxyAuthenticationCredential"]["AccessKeyId"])' "$state/xki-connection.json")

cat > "$state/xki-proxy.toml" <<EOF
# Written by scripts/quickstart.sh. XKI_PROXY__SECTION__KEY variables override any key.
[server]
listen = "127.0.0.1:$proxy_port"
cert_file = "$state/pki/xki-proxy.pem"
key_file = "$state/pki/xki-proxy.key"

[limits]
# KMS Encrypt takes up to 6 KB of plaintext; the XKS minimum is 4300 B.
max_data_bytes = 6144

[ops]
listen = "127.0.0.1:$proxy_ops_port"
admin_token = { file = "$state/secrets/proxy-admin-token" }

[backend]
kind = "remote"
url = "https://localhost:$ekm_port"
ca_file = "$state/pki/ca.pem"
cert_file = "$state/pki/xki-proxy-client.pem"
key_file = "$state/pki/xki-proxy-client.key"

[[key_store]]
prefix = ""
regions = ["$region"]
credentials = [{ access_key_id = "$access_key_id", secret = { file = "$state/secrets/xki-secret" } }]
EOF

wait_http() { # url, seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

start_one() { # name, ready-url, command...
  local name=$1 url=$2; shift 2
  if pid_alive "$state/run/$name.pid" && curl -fsS -o /dev/null "$url" 2>/dev/null; then
    echo "    $name already running (pid $(cat "$state/run/$name.pid"))"
    return
  fi
  stop_one "$name" >/dev/null
  nohup "$@" >>"$state/logs/$name.log" 2>&1 &
  echo $! > "$state/run/$name.pid"
  if ! wait_http "$url" 30; then
    echo "$name did not become ready; last log lines:" >&2
    tail -n 20 "$state/logs/$name.log" >&2
    exit 1
  fi
  echo "    $name started (pid $(cat "$state/run/$name.pid")), log: .state/logs/$name.log"
}

say "start ekm and xki-proxy"
start_one ekm "http://127.0.0.1:$ekm_live_port/ready" "$bin/ekm" --config "$state/ekm.toml" serve
start_one xki-proxy "http://127.0.0.1:$proxy_ops_port/ready" "$bin/xki-proxy" serve --config "$state/xki-proxy.toml"

if [ ! -s "$state/external-key-id" ]; then
  say "mint an external key on the XKI side (the External Key ID a KMS user types into CreateKey)"
  "$bin/xki-proxy" keys --config "$state/xki-proxy.toml" --json create --description "quickstart key" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["externalKeyId"])' > "$state/external-key-id"
fi
key_id=$(cat "$state/external-key-id")
"$bin/xki-proxy" keys --config "$state/xki-proxy.toml" describe "$key_id" | sed 's/^/    /'

secret=$(cat "$state/secrets/xki-secret")
xki() { # path, json body
  curl -sS --fail-with-body --cacert "$state/pki/ca.pem" \
    --aws-sigv4 "aws:amz:$region:kms-xks-proxy" --user "$access_key_id:$secret" \
    -H 'Content-Type: application/json' -d "$2" "https://localhost:$proxy_port/kms/xks/v1$1"
}
meta='"requestMetadata":{"awsPrincipalArn":"acs:ram::1234567890:root","kmsKeyArn":"acs:kms:'$region':1234567890:key/quickstart","kmsOperation":"Encrypt","kmsRequestId":"quickstart"}'

say "XKI calls through the proxy, signed with SigV4 by curl"
echo "    health:   $(xki /health '{"requestMetadata":{"kmsRequestId":"quickstart","kmsOperation":"KmsHealthCheck"}}')"
echo "    metadata: $(xki "/keys/$key_id/metadata" "{$meta}")"
plaintext=$(printf 'hello, HYOK' | base64)
encrypted=$(xki "/keys/$key_id/encrypt" "{$meta,\"plaintext\":\"$plaintext\",\"encryptionAlgorithm\":\"AES_GCM\",\"additionalAuthenticatedData\":\"$(printf 'ctx' | base64)\",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}")
echo "    encrypt:  $encrypted"
decrypt_body=$(python3 - "$encrypted" "$meta" <<'EOF'
import json, sys
e = json.loads(sys.argv[1])
body = json.loads("{" + sys.argv[2] + "}")
body.update({"ciphertext": e["ciphertext"], "ciphertextMetadata": e["ciphertextMetadata"],
             "initializationVector": e["initializationVector"], "authenticationTag": e["authenticationTag"],
             "encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": "Y3R4"})
body["requestMetadata"]["kmsOperation"] = "Decrypt"
print(json.dumps(body))
EOF
)
decrypted=$(xki "/keys/$key_id/decrypt" "$decrypt_body")
echo "    decrypt:  $decrypted -> $(python3 -c 'import json,sys,base64; print(base64.b64decode(json.loads(sys.argv[1])["plaintext"]).decode())' "$decrypted")"

cat <<EOF

The stack is running (stop it with: scripts/quickstart.sh stop).
  EKM        https://127.0.0.1:$ekm_port (mTLS)   config .state/ekm.toml
  xki-proxy  https://localhost:$proxy_port          config .state/xki-proxy.toml, ops http://127.0.0.1:$proxy_ops_port
  KMS connection settings for this proxy: .state/xki-connection.json (contains the secret)
  External Key ID: $key_id

Call the proxy yourself:
  curl --cacert .state/pki/ca.pem --aws-sigv4 "aws:amz:$region:kms-xks-proxy" \\
    --user "$access_key_id:\$(cat .state/secrets/xki-secret)" -H 'Content-Type: application/json' \\
    -d '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}' \\
    https://localhost:$proxy_port/kms/xks/v1/health
EOF

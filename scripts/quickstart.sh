#!/usr/bin/env bash
# The README's first command: sets up and starts the HYOK stack on this machine with the
# embedded defaults (SoftHSM2 tokens, dev PKI), mints an external key on the XKI side and
# proves the path works through the KMS OpenAPI, for an external (HYOK) key and for a
# hardware-protected key generated in the hardware instance's own SoftHSM token. Everything lives under .state/; running it
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
ekm_port=19443 ekm_live_port=19080 proxy_port=18443 proxy_ops_port=19180 proxy_admin_port=19181 kms_port=18080
account_id="1234567890123456"

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
    stop_one kms-connector
    stop_one xki-proxy
    stop_one ekm
    exit 0
    ;;
  status)
    for name in ekm xki-proxy kms-connector; do
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
cargo build --release --quiet -p ekm -p xki-proxy -p certs -p kms-connector

# Everything the stack writes under .state (database, token, logs, configs) is for its
# owner only: 0700 directories, 0600 files.
umask 077
mkdir -p "$state"/{run,logs,secrets,softhsm/tokens}
chmod 700 "$state" "$state"/{run,logs,secrets,softhsm}

say "dev PKI in .state/pki"
"$bin/hyok-dev-pki" init --out "$state/pki" | sed 's/^/    /'

# Secrets are files (mode 0600), never command-line arguments or config values.
new_secret() { # file, bytes
  [ -s "$1" ] || (umask 077 && head -c "$2" /dev/urandom | base64 | tr -d '\n/+=' | cut -c1-32 > "$1")
}
new_secret "$state/secrets/ekm-user-pin" 32
new_secret "$state/secrets/ekm-so-pin" 32
new_secret "$state/secrets/proxy-admin-token" 48
new_secret "$state/secrets/kms-access-key-secret" 48
new_secret "$state/secrets/hsm-user-pin" 32
new_secret "$state/secrets/hsm-so-pin" 32
[ -s "$state/secrets/root.key" ] || (umask 077 && head -c 32 /dev/urandom > "$state/secrets/root.key")
# Stable ids for this machine's stack (made once).
if [ ! -s "$state/ids.env" ]; then
  rnd() { tr -dc 'a-z0-9' < /dev/urandom | head -c "$1" || true; }
  {
    echo "kms_access_key_id=LTAI5t$(tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 18 || true)"
    echo "software_instance=kst-hzz$(printf '%08x' "$(date +%s)")$(rnd 10)"
    echo "external_instance=kst-hzz$(printf '%08x' "$(date +%s)")$(rnd 10)"
  } > "$state/ids.env"
fi
if ! grep -q '^hardware_instance=' "$state/ids.env"; then # a stack made before hardware instances
  echo "hardware_instance=kst-hzz$(printf '%08x' "$(date +%s)")$(tr -dc 'a-z0-9' < /dev/urandom | head -c 10 || true)" >> "$state/ids.env"
fi
# shellcheck disable=SC1091
. "$state/ids.env"

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
allowed_client_names = ["xki-proxy"]
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

[admin]
# Loopback only: a non-loopback admin listener needs [admin.tls].
listen = "127.0.0.1:$proxy_admin_port"
token = { file = "$state/secrets/proxy-admin-token" }

[backend]
kind = "remote"
url = "https://localhost:$ekm_port"
ca_file = "$state/pki/ca.pem"
cert_file = "$state/pki/xki-proxy-client.pem"
key_file = "$state/pki/xki-proxy-client.key"

[[key_store]]
prefix = ""
regions = ["$region"]
# Requests must be signed for this host (the endpoint in .state/xki-connection.json).
hosts = ["localhost"]
credentials = [{ access_key_id = "$access_key_id", secret = { file = "$state/secrets/xki-secret" } }]
EOF

cat > "$state/kms-connector.toml" <<EOF
# Written by scripts/quickstart.sh. KMS_CONNECTOR__SECTION__KEY variables override any key.
default_instance = "$software_instance"

[server]
listen = "127.0.0.1:$kms_port"

[kms]
region = "$region"
account_id = "$account_id"

[database]
url = "sqlite://$state/kms-connector.db"

[root_key]
file = "$state/secrets/root.key"

[[access_keys]]
access_key_id = "$kms_access_key_id"
secret = { file = "$state/secrets/kms-access-key-secret" }
principal = "acs:ram::$account_id:root"

[[instances]]
id = "$software_instance"
kind = "software"
name = "software-keys"

[[instances]]
id = "$external_instance"
kind = "external"
name = "hyok-xki-localhost"
[instances.external]
settings_file = "$state/xki-connection.json"
ca_file = "$state/pki/ca.pem"

[[instances]]
id = "$hardware_instance"
kind = "hardware"
name = "hsm-keys"
[instances.hardware]
# Its own token, not the EKM's: keys are generated inside it and never leave it.
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "hyok-hardware"
pin = { file = "$state/secrets/hsm-user-pin" }
EOF

if [ ! -f "$state/softhsm/.hardware-initialized" ]; then
  say "SoftHSM token 'hyok-hardware' for the hardware instance"
  "$bin/kms-connector" --config "$state/kms-connector.toml" instances init-token "$hardware_instance" \
    --so-pin-file "$state/secrets/hsm-so-pin" | sed 's/^/    /'
  touch "$state/softhsm/.hardware-initialized"
fi

wait_http() { # url, seconds (any HTTP answer counts)
  local deadline=$((SECONDS + $2))
  until curl -sS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

start_one() { # name, ready-url, command...
  local name=$1 url=$2; shift 2
  if pid_alive "$state/run/$name.pid" && curl -sS -o /dev/null "$url" 2>/dev/null; then
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

say "start ekm, xki-proxy and kms-connector"
start_one ekm "http://127.0.0.1:$ekm_live_port/ready" "$bin/ekm" --config "$state/ekm.toml" serve
start_one xki-proxy "http://127.0.0.1:$proxy_ops_port/ready" "$bin/xki-proxy" serve --config "$state/xki-proxy.toml"
start_one kms-connector "http://127.0.0.1:$kms_port/" "$bin/kms-connector" --config "$state/kms-connector.toml" serve

if [ ! -s "$state/external-key-id" ]; then
  say "mint an external key on the XKI side (the External Key ID a KMS user types into CreateKey)"
  "$bin/xki-proxy" keys --config "$state/xki-proxy.toml" --json create --description "quickstart key" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["externalKeyId"])' > "$state/external-key-id"
fi
key_id=$(cat "$state/external-key-id")
"$bin/xki-proxy" keys --config "$state/xki-proxy.toml" describe "$key_id" | sed 's/^/    /'

kms() { "$bin/kms-connector" --config "$state/kms-connector.toml" "$@"; }
field() { # dotted.path: reads JSON on stdin
  python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(v)' "$1"
}
api() { # Action Name=Value...: a signed OpenAPI call made by plain curl
  curl -sS "$(kms sign-url "$@")"
}

say "connect the external key instance to the XKI proxy"
kms call ConnectKmsInstance KmsInstanceId="$external_instance" >/dev/null
deadline=$((SECONDS + 30))
until [ "$(api GetKmsInstance KmsInstanceId="$external_instance" | field KmsInstance.Status 2>/dev/null)" = Connected ]; do
  if [ $SECONDS -ge $deadline ]; then
    echo "the external instance did not connect:" >&2
    api GetKmsInstance KmsInstanceId="$external_instance" >&2
    exit 1
  fi
  sleep 0.5
done
echo "    $external_instance: Connected"

if [ ! -s "$state/kms-key-id" ]; then
  say "CreateKey in the external instance, bound to External Key ID $key_id"
  created=$(api CreateKey DKMSInstanceId="$external_instance" ExternalKeyId="$key_id" Description="quickstart HYOK key")
  printf '%s' "$created" | field KeyMetadata.KeyId > "$state/kms-key-id" || { echo "CreateKey failed: $created" >&2; exit 1; }
  api CreateAlias AliasName=alias/quickstart-hyok KeyId="$(cat "$state/kms-key-id")" >/dev/null
fi
kms_key=$(cat "$state/kms-key-id")
api DescribeKey KeyId="$kms_key" | python3 -c 'import json,sys
m = json.load(sys.stdin)["KeyMetadata"]
print("    " + "  ".join(f"{k}={m.get(k)}" for k in ("KeyId", "KeyState", "KeySpec", "ProtectionLevel", "DKMSInstanceId")))'

say "Encrypt -> Decrypt -> GenerateDataKey through the KMS OpenAPI (signed URLs, plain curl)"
context='{"app":"quickstart"}'
encrypted=$(api Encrypt KeyId=alias/quickstart-hyok Plaintext="hello, HYOK" EncryptionContext="$context")
blob=$(printf '%s' "$encrypted" | field CiphertextBlob) || { echo "Encrypt failed: $encrypted" >&2; exit 1; }
echo "    Encrypt:          CiphertextBlob=${blob:0:48}..."
decrypted=$(api Decrypt CiphertextBlob="$blob" EncryptionContext="$context")
echo "    Decrypt:          Plaintext=$(printf '%s' "$decrypted" | field Plaintext)"
data_key=$(api GenerateDataKey KeyId="$kms_key" NumberOfBytes=32)
dk_plain=$(printf '%s' "$data_key" | field Plaintext) || { echo "GenerateDataKey failed: $data_key" >&2; exit 1; }
dk_blob=$(printf '%s' "$data_key" | field CiphertextBlob)
echo "    GenerateDataKey:  Plaintext=${dk_plain:0:12}... CiphertextBlob=${dk_blob:0:24}..."
if [ "$(api Decrypt CiphertextBlob="$dk_blob" | field Plaintext)" = "$dk_plain" ]; then
  echo "    Decrypt(data key) gives the same data key"
else
  echo "Decrypt of the data key did not give it back" >&2
  exit 1
fi

say "a hardware-protected key: CreateKey in the hardware instance, Encrypt -> Decrypt"
if [ ! -s "$state/hardware-key-id" ]; then
  created=$(api CreateKey DKMSInstanceId="$hardware_instance" Description="quickstart HSM key")
  printf '%s' "$created" | field KeyMetadata.KeyId > "$state/hardware-key-id" || { echo "CreateKey failed: $created" >&2; exit 1; }
  api CreateAlias AliasName=alias/quickstart-hsm KeyId="$(cat "$state/hardware-key-id")" >/dev/null
fi
hsm_key=$(cat "$state/hardware-key-id")
api DescribeKey KeyId="$hsm_key" | python3 -c 'import json,sys
m = json.load(sys.stdin)["KeyMetadata"]
print("    " + "  ".join(f"{k}={m.get(k)}" for k in ("KeyId", "KeyState", "KeySpec", "ProtectionLevel", "DKMSInstanceId")))'
encrypted=$(api Encrypt KeyId=alias/quickstart-hsm Plaintext="hello, HSM" EncryptionContext="$context")
blob=$(printf '%s' "$encrypted" | field CiphertextBlob) || { echo "Encrypt failed: $encrypted" >&2; exit 1; }
echo "    Encrypt:          CiphertextBlob=${blob:0:48}..."
decrypted=$(api Decrypt CiphertextBlob="$blob" EncryptionContext="$context" | field Plaintext)
[ "$decrypted" = "hello, HSM" ] || { echo "Decrypt gave $decrypted" >&2; exit 1; }
echo "    Decrypt:          Plaintext=$decrypted"

cat <<EOF

The stack is running (stop: scripts/quickstart.sh stop; status: scripts/quickstart.sh status).
  kms-connector  http://127.0.0.1:$kms_port   KMS OpenAPI 2016-01-20; config .state/kms-connector.toml, database .state/kms-connector.db
  xki-proxy      https://localhost:$proxy_port  XKI (SigV4);        config .state/xki-proxy.toml, ops http://127.0.0.1:$proxy_ops_port, admin http://127.0.0.1:$proxy_admin_port
  ekm            https://127.0.0.1:$ekm_port  EKM API (mTLS);     config .state/ekm.toml, SoftHSM token in .state/softhsm
  KMS key $kms_key (alias/quickstart-hyok) is bound to External Key ID $key_id.
  KMS key $hsm_key (alias/quickstart-hsm) lives in the hardware instance's SoftHSM token 'hyok-hardware'.
  Instances (.state/ids.env): software $software_instance, external $external_instance, hardware $hardware_instance.

Call the KMS API yourself with curl (the URL carries an HMAC-SHA1 RPC signature):
  curl "\$(target/release/kms-connector -c .state/kms-connector.toml sign-url Encrypt KeyId=alias/quickstart-hyok Plaintext=hi)"

or with Alibaba's Python SDK (pip install alibabacloud-kms20160120):
  from alibabacloud_kms20160120.client import Client
  from alibabacloud_kms20160120 import models
  from alibabacloud_tea_openapi.models import Config
  client = Client(Config(access_key_id="$kms_access_key_id",
                         access_key_secret=open(".state/secrets/kms-access-key-secret").read().strip(),
                         endpoint="127.0.0.1:$kms_port", protocol="http", region_id="$region"))
  blob = client.encrypt(models.EncryptRequest(key_id="alias/quickstart-hyok", plaintext="hi")).body.ciphertext_blob
  print(client.decrypt(models.DecryptRequest(ciphertext_blob=blob)).body.plaintext)

The XKI proxy directly, with curl's SigV4:
  curl --cacert .state/pki/ca.pem --aws-sigv4 "aws:amz:$region:kms-xks-proxy" \\
    --user "$access_key_id:\$(cat .state/secrets/xki-secret)" -H 'Content-Type: application/json' \\
    -d '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}' \\
    https://localhost:$proxy_port/kms/xks/v1/health
EOF

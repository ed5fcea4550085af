"""Starts a real kms-connector for the SDK tests: SQLite, a software instance and a hardware
instance on a SoftHSM2 token of its own (in the test's temp dir, initialised by the CLI)."""

import base64
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "1234567890123456"
REGION = "cn-hangzhou"
INSTANCE = "kst-hzz68d1fd85sdktest001"
HARDWARE_INSTANCE = "kst-hzz68d1fd85sdkhsm0001"
ACCESS_KEY_ID = "LTAI5tSdkTestAccessKey01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("debug", "release"):
        candidate = target / profile / "kms-connector"
        if candidate.exists():
            return candidate
    raise RuntimeError("build kms-connector first (cargo build -p kms-connector)")


class Connector:
    def __init__(self, endpoint: str, secret: str):
        self.endpoint = endpoint
        self.access_key_id = ACCESS_KEY_ID
        self.secret = secret
        self.region = REGION
        self.instance = INSTANCE
        self.hardware_instance = HARDWARE_INSTANCE


@pytest.fixture(scope="session")
def connector(tmp_path_factory):
    state = tmp_path_factory.mktemp("kms-connector")
    secret = base64.b64encode(secrets.token_bytes(30)).decode()
    (state / "ak.secret").write_text(secret)
    (state / "root.key").write_bytes(secrets.token_bytes(32))
    (state / "hsm.pin").write_text(secrets.token_hex(16))
    (state / "hsm.so-pin").write_text(secrets.token_hex(16))
    for name in ("ak.secret", "root.key", "hsm.pin", "hsm.so-pin"):
        os.chmod(state / name, 0o600)
    (state / "tokens").mkdir()
    (state / "softhsm2.conf").write_text(
        f"directories.tokendir = {state}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = dict(os.environ, SOFTHSM2_CONF=str(state / "softhsm2.conf"))
    port = _free_port()
    (state / "kms-connector.toml").write_text(
        f"""
default_instance = "{INSTANCE}"
[server]
listen = "127.0.0.1:{port}"
[kms]
region = "{REGION}"
account_id = "{ACCOUNT}"
[database]
url = "sqlite://{state}/kms.db"
[root_key]
file = "root.key"
[[access_keys]]
access_key_id = "{ACCESS_KEY_ID}"
secret = {{ file = "ak.secret" }}
principal = "acs:ram::{ACCOUNT}:root"
[[instances]]
id = "{INSTANCE}"
kind = "software"
name = "sdk-tests"
[[instances]]
id = "{HARDWARE_INSTANCE}"
kind = "hardware"
name = "sdk-tests-hsm"
[instances.hardware]
token_label = "sdk-tests-hsm"
pin = {{ file = "hsm.pin" }}
"""
    )
    config = str(state / "kms-connector.toml")
    subprocess.run(
        [str(_binary()), "--config", config, "instances", "init-token", HARDWARE_INSTANCE,
         "--so-pin-file", str(state / "hsm.so-pin")],
        env=env, check=True, capture_output=True,
    )
    log = open(state / "kms-connector.log", "wb")
    process = subprocess.Popen(
        [str(_binary()), "serve", "--config", config],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    "kms-connector did not start:\n" + (state / "kms-connector.log").read_text()
                )
            time.sleep(0.1)
    yield Connector(f"127.0.0.1:{port}", secret)
    process.terminate()
    process.wait(timeout=10)
    log.close()
    # Nothing the SDKs sent in clear may sit in the database file.
    db = (state / "kms.db").read_bytes() + b"".join(
        p.read_bytes() for p in state.glob("kms.db-*")
    )
    assert b"sdk plaintext" not in db

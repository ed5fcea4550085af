#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/.

The signed requests come from the captures in ../shared/vectors/ (real curl and Alibaba SDK
requests; their credentials are published test values, not secrets); the rest are the
documented examples of each format. The output is deterministic, so the committed seeds are
exactly what this script writes: run it again after a vector changes.

Usage: fuzz/make_seeds.py [VECTORS_DIR]   (default: ../shared/vectors beside the repository)
"""

import base64
import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
VECTORS = Path(sys.argv[1]) if len(sys.argv) > 1 else FUZZ.parent.parent / "shared" / "vectors"


def http(request):
    """The framing of fuzz/src/lib.rs: request line, headers, blank line, body."""
    head = f"{request['method']} {request['target']}\n"
    for name, value in request["headers"]:
        head += f"{name}: {value}\n"
    return (head + "\n").encode() + base64.b64decode(request.get("body_base64", ""))


def body(request):
    return base64.b64decode(request.get("body_base64", ""))


class Seeds:
    def __init__(self):
        self.root = FUZZ / "seeds"
        if self.root.exists():
            shutil.rmtree(self.root)

    def add(self, target, data):
        if isinstance(data, str):
            data = data.encode()
        directory = self.root / target
        directory.mkdir(parents=True, exist_ok=True)
        # Named by content, as libFuzzer names corpus files.
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main():
    seeds = Seeds()
    sigv4 = json.loads((VECTORS / "xki-sigv4.json").read_text())
    openapi = json.loads((VECTORS / "kms-openapi-signatures.json").read_text())
    cdiv = json.loads((VECTORS / "xki-cdiv.json").read_text())

    ops = {"health": 0, "metadata": 1, "encrypt": 2, "decrypt": 3}
    for request in sigv4["requests"]:
        raw = http(request)
        seeds.add("sigv4_verify", raw)
        # mode, flip position (u16 LE), flip mask, signed-header mask, request
        seeds.add("sigv4_sign_verify", bytes([0, 40, 0, 1, 0xFF]) + raw)
        seeds.add("sigv4_sign_verify", bytes([1, 0, 0, 0, 0x0F]) + raw + b"\0" + raw)
        op = request["target"].rsplit("/", 1)[-1]
        seeds.add("xki_request", bytes([ops[op]]) + body(request))
        seeds.add("xki_request", bytes([0x80 | ops[op]]) + body(request))
        document = json.loads(body(request))
        for field in ("plaintext", "ciphertext", "additionalAuthenticatedData", "initializationVector"):
            if field in document:
                seeds.add("b64", document[field])
        if "/keys/" in request["target"]:
            seeds.add("xki_request", bytes([4]) + request["target"].split("/keys/")[1].split("/")[0].encode())

    for request in openapi["requests"]:
        raw = http(request)
        seeds.add("acs_verify", raw)
        rpc = "Signature=" in request["target"]
        seeds.add("acs_sign_verify", bytes([1 if rpc else 0, 7, 0, 0x20]) + raw)
        seeds.add("acs_sign_verify", bytes([5 if rpc else 2, 0, 0, 0]) + raw + b"\0" + raw)
        for pair in request["target"].split("?", 1)[-1].split("&"):
            name, _, value = pair.partition("=")
            if name == "EncryptionContext":
                from urllib.parse import unquote_plus

                context = unquote_plus(value)
                seeds.add("encryption_context", context)
                seeds.add("encryption_context", context + "\0" + json.dumps(dict(reversed(json.loads(context).items()))))
            if name in ("Plaintext", "CiphertextBlob"):
                from urllib.parse import unquote_plus

                seeds.add("b64", unquote_plus(value))
    seeds.add("encryption_context", '{"a=b":"c"}\0{"a":"b=c"}')
    seeds.add("encryption_context", '{"k":"1","k":"2"}')

    decrypt = {
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k",
            "kmsOperation": "Decrypt",
            "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
        },
        "ciphertext": cdiv["ciphertext"],
        "ciphertextMetadata": cdiv["ciphertextMetadata"],
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": cdiv["additionalAuthenticatedData"],
        "initializationVector": cdiv["initializationVector"],
        "authenticationTag": cdiv["authenticationTag"],
    }
    seeds.add("xki_request", bytes([3]) + json.dumps(decrypt).encode())
    for field in ("additionalAuthenticatedData", "ciphertextMetadata", "initializationVector", "ciphertext",
                  "authenticationTag", "ciphertextDataIntegrityValue"):
        seeds.add("b64", cdiv[field])
    seeds.add("b64", "")

    # kms_blob: 0 = CiphertextBlob text (format 1, then format 2), 1 = external payload,
    # 2 = pieces to pack.
    version = b"0b4b1a6e-7f3c-4c1e-9a8f-2d5e6f708192"
    iv, ctm, tag = base64.b64decode(cdiv["initializationVector"]), bytes([1, 0, 0, 0, 1]), base64.b64decode(cdiv["authenticationTag"])
    ciphertext = base64.b64decode(cdiv["ciphertext"])
    payload = bytes([1, len(iv)]) + iv + bytes([len(ctm)]) + ctm + tag + ciphertext
    seeds.add("kms_blob", b"\0" + base64.b64encode(version + payload))
    seeds.add("kms_blob", b"\0" + base64.b64encode(version + b"\2" + payload))
    seeds.add("kms_blob", b"\0" + base64.b64encode(version + b"\2" + bytes(12) + ciphertext + tag))
    seeds.add("kms_blob", b"\0" + base64.b64encode(version + bytes(12) + ciphertext + tag))
    seeds.add("kms_blob", b"\1" + payload)
    seeds.add("kms_blob", b"\2" + bytes([len(iv), len(ctm)]) + iv + ctm + tag + ciphertext)

    # ciphertext_metadata: 0 = parse, 1 = encode → parse, 2 = AAD construction and decrypt checks.
    for meta in (bytes([1, 0, 0, 0, 1]), bytes([2, 0, 0, 0, 7]), base64.b64decode(cdiv["ciphertextMetadata"])):
        seeds.add("ciphertext_metadata", b"\0" + meta)
    seeds.add("ciphertext_metadata", b"\1" + bytes([1, 0, 0, 0, 2]))
    seeds.add("ciphertext_metadata", b"\2" + bytes([5, 1, 0, 0, 1]) + base64.b64decode(cdiv["additionalAuthenticatedData"]))

    meta = {
        "externalKeyId": "ekm-7Jd2kQ_x.1", "keySpec": "AES_256", "usage": ["ENCRYPT", "DECRYPT"],
        "state": "PENDING_DELETION", "deletionDate": "2026-02-01T00:00:00Z", "currentVersion": 2,
        "createdAt": "2026-01-01T12:00:00Z", "origin": "EKM", "description": "orders database",
    }
    ekm = [
        {"externalKeyId": "ekm-7Jd2kQ_x.1", "usage": ["ENCRYPT"]},
        {"hsmLabel": "legacy-aes", "usage": ["ENCRYPT", "DECRYPT"], "description": "made by pkcs11-tool"},
        {"pendingWindowDays": 7},
        meta,
        {"keys": [meta]},
        {"plaintext": "aGVsbG8=", "additionalAuthenticatedData": "YWFk", "wantCdiv": True},
        {"ciphertext": "3q2+7w4=", "initializationVector": "AAECAwQFBgcICQoL",
         "authenticationTag": "AAECAwQFBgcICQoLDA0ODw==", "ciphertextMetadata": "AQAAAAI=",
         "ciphertextDataIntegrityValue": cdiv["ciphertextDataIntegrityValue"], "keyVersion": 2},
        {"ciphertext": "3q2+7w4=", "initializationVector": "AAECAwQFBgcICQoL",
         "authenticationTag": "AAECAwQFBgcICQoLDA0ODw==", "ciphertextMetadata": "AQAAAAI="},
        {"plaintext": "aGVsbG8="},
        {"status": "ACTIVE", "checkedAt": "2026-01-01T12:00:00Z",
         "hsms": [{"id": "softhsm-0", "model": "SoftHSM", "healthStatus": "ACTIVE", "probeLatencyUs": 180}]},
        {"error": "Throttled", "message": "busy"},
    ]
    for selector, document in enumerate(ekm):
        seeds.add("ekm_api_json", bytes([selector]) + json.dumps(document).encode())

    settings = {
        "XksProxyUriEndpoint": "https://localhost:8443",
        "XksProxyUriPath": "/example/prefix/kms/xks/v1",
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": sigv4["access_key_id"],
            "RawSecretAccessKey": sigv4["secret_access_key"],
        },
        "ServerCertificateSha256": "0f" * 32,
        "Connectivity": "private-link",
    }
    seeds.add("connection_settings", b"\0" + json.dumps(settings, indent=2).encode())
    # 1: host (2 port bytes + name), prefix, AccessKeyId, secret, certificate DER, '\n'-separated.
    seeds.add("connection_settings", b"\1" + b"\x20\xfbxki.example.com\nexample/prefix\n"
              + bytes(range(26)) + b"\n" + bytes(range(44)) + b"\ncertificate")
    seeds.add("connection_settings", b"\3" + b"\n\n" + bytes(range(20)) + b"\n" + bytes(range(64)) + b"\n")


if __name__ == "__main__":
    main()

"""Alibaba's own Python SDKs, unmodified, against our kms-connector: the new Tea SDK
(alibabacloud-kms20160120, ACS3-HMAC-SHA256) and the classic one (aliyun-python-sdk-kms,
HMAC-SHA1 RPC signature)."""

import base64
import hashlib
import json
import uuid

import pytest
from alibabacloud_kms20160120 import models as tea_models
from alibabacloud_kms20160120.client import Client as TeaClient
from alibabacloud_tea_openapi import models as open_api_models
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkkms.request.v20160120 import (
    CreateAliasRequest,
    CreateKeyRequest,
    DecryptRequest,
    DescribeKeyRequest,
    EncryptRequest,
    GenerateDataKeyRequest,
    ListAliasesByKeyIdRequest,
    ListKeysRequest,
    ListResourceTagsRequest,
    TagResourceRequest,
)
from Tea.exceptions import TeaException

PLAINTEXT = "sdk plaintext: 日本語 & symbols +/="
CONTEXT = {"purpose": "sdk-test", "tenant": "a b/c"}


def tea(connector, secret=None) -> TeaClient:
    config = open_api_models.Config(
        access_key_id=connector.access_key_id,
        access_key_secret=secret or connector.secret,
        endpoint=connector.endpoint,
        protocol="http",
        region_id=connector.region,
    )
    return TeaClient(config)


def classic(connector, secret=None):
    client = AcsClient(connector.access_key_id, secret or connector.secret, connector.region)

    def call(request):
        request.set_endpoint(connector.endpoint)
        request.set_protocol_type("http")
        request.set_accept_format("JSON")
        return json.loads(client.do_action_with_exception(request))

    return call


def test_tea_sdk_key_lifecycle_and_crypto(connector):
    client = tea(connector)
    created = client.create_key(
        tea_models.CreateKeyRequest(
            dkmsinstance_id=connector.instance,
            description="tea sdk key",
            key_spec="Aliyun_AES_256",
            key_usage="ENCRYPT/DECRYPT",
            tags=json.dumps([{"TagKey": "env", "TagValue": "dev"}]),
        )
    ).body.key_metadata
    key_id = created.key_id
    assert key_id.startswith("key-")
    assert created.key_state == "Enabled"
    assert created.arn == f"acs:kms:{connector.region}:1234567890123456:key/{key_id}"

    described = client.describe_key(tea_models.DescribeKeyRequest(key_id=key_id)).body.key_metadata
    assert (described.key_id, described.key_spec, described.description) == (
        key_id,
        "Aliyun_AES_256",
        "tea sdk key",
    )

    listed = client.list_keys(tea_models.ListKeysRequest(page_size=100)).body
    assert key_id in [k.key_id for k in listed.keys.key]
    assert listed.total_count >= 1

    alias = f"alias/tea-{uuid.uuid4().hex[:8]}"
    client.create_alias(tea_models.CreateAliasRequest(alias_name=alias, key_id=key_id))
    aliases = client.list_aliases_by_key_id(tea_models.ListAliasesByKeyIdRequest(key_id=key_id)).body
    assert alias in [a.alias_name for a in aliases.aliases.alias]

    client.tag_resource(
        tea_models.TagResourceRequest(key_id=key_id, tags=json.dumps([{"TagKey": "team", "TagValue": "kms"}]))
    )
    tags = client.list_resource_tags(tea_models.ListResourceTagsRequest(key_id=key_id)).body.tags.tag
    assert {(t.tag_key, t.tag_value) for t in tags} == {("env", "dev"), ("team", "kms")}

    # Encrypt through the alias, decrypt with the blob alone, context order-insensitive.
    encrypted = client.encrypt(
        tea_models.EncryptRequest(
            key_id=alias, plaintext=PLAINTEXT, encryption_context=CONTEXT
        )
    ).body
    assert encrypted.key_id == key_id
    reordered = dict(reversed(list(CONTEXT.items())))
    decrypted = client.decrypt(
        tea_models.DecryptRequest(ciphertext_blob=encrypted.ciphertext_blob, encryption_context=reordered)
    ).body
    assert (decrypted.plaintext, decrypted.key_id) == (PLAINTEXT, key_id)

    data_key = client.generate_data_key(tea_models.GenerateDataKeyRequest(key_id=key_id, number_of_bytes=32)).body
    assert len(base64.b64decode(data_key.plaintext)) == 32
    unwrapped = client.decrypt(tea_models.DecryptRequest(ciphertext_blob=data_key.ciphertext_blob)).body
    assert unwrapped.plaintext == data_key.plaintext


def test_classic_sdk_key_lifecycle_and_crypto(connector):
    call = classic(connector)
    request = CreateKeyRequest.CreateKeyRequest()
    request.set_Description("classic sdk key")
    request.set_KeySpec("Aliyun_AES_256")
    request.set_DKMSInstanceId(connector.instance)
    key_id = call(request)["KeyMetadata"]["KeyId"]

    request = DescribeKeyRequest.DescribeKeyRequest()
    request.set_KeyId(key_id)
    metadata = call(request)["KeyMetadata"]
    assert (metadata["KeyState"], metadata["Description"]) == ("Enabled", "classic sdk key")

    request = ListKeysRequest.ListKeysRequest()
    request.set_PageSize(100)
    assert key_id in [k["KeyId"] for k in call(request)["Keys"]["Key"]]

    alias = f"alias/classic-{uuid.uuid4().hex[:8]}"
    request = CreateAliasRequest.CreateAliasRequest()
    request.set_AliasName(alias)
    request.set_KeyId(key_id)
    call(request)
    request = ListAliasesByKeyIdRequest.ListAliasesByKeyIdRequest()
    request.set_KeyId(key_id)
    assert [a["AliasName"] for a in call(request)["Aliases"]["Alias"]] == [alias]

    request = TagResourceRequest.TagResourceRequest()
    request.set_KeyId(key_id)
    request.set_Tags(json.dumps([{"TagKey": "owner", "TagValue": "classic"}]))
    call(request)
    request = ListResourceTagsRequest.ListResourceTagsRequest()
    request.set_KeyId(key_id)
    assert [(t["TagKey"], t["TagValue"]) for t in call(request)["Tags"]["Tag"]] == [("owner", "classic")]

    request = EncryptRequest.EncryptRequest()
    request.set_KeyId(alias)
    request.set_Plaintext(PLAINTEXT)
    request.set_EncryptionContext(json.dumps(CONTEXT))
    blob = call(request)["CiphertextBlob"]
    request = DecryptRequest.DecryptRequest()
    request.set_CiphertextBlob(blob)
    request.set_EncryptionContext(json.dumps(CONTEXT))
    assert call(request)["Plaintext"] == PLAINTEXT

    request = GenerateDataKeyRequest.GenerateDataKeyRequest()
    request.set_KeyId(key_id)
    data_key = call(request)
    assert len(base64.b64decode(data_key["Plaintext"])) == 32
    request = DecryptRequest.DecryptRequest()
    request.set_CiphertextBlob(data_key["CiphertextBlob"])
    assert call(request)["Plaintext"] == data_key["Plaintext"]


def test_wrong_secret_is_refused_by_both_sdks(connector):
    wrong = connector.secret[:-4] + "AAAA"
    with pytest.raises(TeaException) as tea_error:
        tea(connector, wrong).list_keys(tea_models.ListKeysRequest())
    assert tea_error.value.code == "IncompleteSignature"
    assert tea_error.value.data["HttpStatus"] == 400

    request = ListKeysRequest.ListKeysRequest()
    with pytest.raises(ServerException) as classic_error:
        classic(connector, wrong)(request)
    assert classic_error.value.get_error_code() == "IncompleteSignature"
    assert classic_error.value.get_http_status() == 400


def test_mismatched_context_is_refused(connector):
    client = tea(connector)
    key_id = client.create_key(tea_models.CreateKeyRequest(dkmsinstance_id=connector.instance)).body.key_metadata.key_id
    blob = client.encrypt(
        tea_models.EncryptRequest(key_id=key_id, plaintext="x", encryption_context=CONTEXT)
    ).body.ciphertext_blob
    with pytest.raises(TeaException) as error:
        client.decrypt(tea_models.DecryptRequest(ciphertext_blob=blob, encryption_context={"purpose": "other"}))
    assert error.value.code == "InvalidParameter"


def test_versions_and_rotation_with_both_sdks(connector):
    client = tea(connector)
    created = client.create_key(
        tea_models.CreateKeyRequest(
            dkmsinstance_id=connector.instance,
            enable_automatic_rotation=True,
            rotation_interval="30d",
        )
    ).body.key_metadata
    assert (created.automatic_rotation, created.rotation_interval) == ("Enabled", "2592000s")
    key_id = created.key_id
    blob = client.encrypt(tea_models.EncryptRequest(key_id=key_id, plaintext="v1")).body.ciphertext_blob

    version = client.create_key_version(tea_models.CreateKeyVersionRequest(key_id=key_id)).body.key_version
    assert version.key_id == key_id
    described = client.describe_key(tea_models.DescribeKeyRequest(key_id=key_id)).body.key_metadata
    assert described.primary_key_version == version.key_version_id
    encrypted = client.encrypt(tea_models.EncryptRequest(key_id=key_id, plaintext="v2")).body
    assert encrypted.key_version_id == version.key_version_id
    assert client.decrypt(tea_models.DecryptRequest(ciphertext_blob=blob)).body.plaintext == "v1"

    listed = client.list_key_versions(tea_models.ListKeyVersionsRequest(key_id=key_id)).body
    assert listed.total_count == 2
    assert [v.key_version_id for v in listed.key_versions.key_version][1] == version.key_version_id

    client.update_rotation_policy(
        tea_models.UpdateRotationPolicyRequest(
            key_id=key_id, enable_automatic_rotation=True, rotation_interval="7d"
        )
    )
    described = client.describe_key(tea_models.DescribeKeyRequest(key_id=key_id)).body.key_metadata
    assert described.rotation_interval == "604800s"
    with pytest.raises(TeaException) as error:
        client.update_rotation_policy(
            tea_models.UpdateRotationPolicyRequest(
                key_id=key_id, enable_automatic_rotation=True, rotation_interval="2d"
            )
        )
    assert error.value.code == "InvalidParameter"

    # The classic SDK: its request classes for the same actions.
    from aliyunsdkkms.request.v20160120 import (
        CreateKeyVersionRequest,
        ListKeyVersionsRequest,
        UpdateRotationPolicyRequest,
    )

    call = classic(connector)
    request = CreateKeyVersionRequest.CreateKeyVersionRequest()
    request.set_KeyId(key_id)
    third = call(request)["KeyVersion"]["KeyVersionId"]
    request = ListKeyVersionsRequest.ListKeyVersionsRequest()
    request.set_KeyId(key_id)
    versions = call(request)["KeyVersions"]["KeyVersion"]
    assert [v["KeyVersionId"] for v in versions][-1] == third
    request = UpdateRotationPolicyRequest.UpdateRotationPolicyRequest()
    request.set_KeyId(key_id)
    request.set_EnableAutomaticRotation(False)
    call(request)
    request = DescribeKeyRequest.DescribeKeyRequest()
    request.set_KeyId(key_id)
    assert call(request)["KeyMetadata"]["AutomaticRotation"] == "Disabled"


def _only_version(client, key_id):
    listed = client.list_key_versions(tea_models.ListKeyVersionsRequest(key_id=key_id)).body
    assert listed.total_count == 1
    return listed.key_versions.key_version[0].key_version_id


def test_tea_sdk_asymmetric_keys(connector):
    client = tea(connector)
    signer = client.create_key(
        tea_models.CreateKeyRequest(
            dkmsinstance_id=connector.instance, key_spec="RSA_2048", key_usage="SIGN/VERIFY"
        )
    ).body.key_metadata
    assert (signer.key_spec, signer.key_usage) == ("RSA_2048", "SIGN/VERIFY")
    version = _only_version(client, signer.key_id)

    public = client.get_public_key(
        tea_models.GetPublicKeyRequest(key_id=signer.key_id, key_version_id=version)
    ).body
    assert public.key_version_id == version
    assert public.public_key.startswith("-----BEGIN PUBLIC KEY-----\n")

    digest = base64.b64encode(hashlib.sha256(b"signed through the Tea SDK").digest()).decode()
    signed = client.asymmetric_sign(
        tea_models.AsymmetricSignRequest(
            key_id=signer.key_id, key_version_id=version, algorithm="RSA_PSS_SHA_256", digest=digest
        )
    ).body
    assert (signed.key_id, signed.key_version_id) == (signer.key_id, version)
    assert len(base64.b64decode(signed.value)) == 256

    def verify(digest):
        return client.asymmetric_verify(
            tea_models.AsymmetricVerifyRequest(
                key_id=signer.key_id,
                key_version_id=version,
                algorithm="RSA_PSS_SHA_256",
                digest=digest,
                value=signed.value,
            )
        ).body.value

    assert verify(digest) is True
    other = base64.b64encode(hashlib.sha256(b"another message").digest()).decode()
    assert verify(other) is False

    with pytest.raises(TeaException) as error:
        client.asymmetric_sign(
            tea_models.AsymmetricSignRequest(
                key_id=signer.key_id, key_version_id=version, algorithm="ECDSA_SHA_256", digest=digest
            )
        )
    assert error.value.code == "InvalidParameter"

    encrypter = client.create_key(
        tea_models.CreateKeyRequest(
            dkmsinstance_id=connector.instance, key_spec="RSA_2048", key_usage="ENCRYPT/DECRYPT"
        )
    ).body.key_metadata
    version = _only_version(client, encrypter.key_id)
    secret = base64.b64encode(b"a secret for RSAES-OAEP").decode()
    encrypted = client.asymmetric_encrypt(
        tea_models.AsymmetricEncryptRequest(
            key_id=encrypter.key_id, key_version_id=version, algorithm="RSAES_OAEP_SHA_256", plaintext=secret
        )
    ).body
    assert len(base64.b64decode(encrypted.ciphertext_blob)) == 256
    decrypted = client.asymmetric_decrypt(
        tea_models.AsymmetricDecryptRequest(
            key_id=encrypter.key_id,
            key_version_id=version,
            algorithm="RSAES_OAEP_SHA_256",
            ciphertext_blob=encrypted.ciphertext_blob,
        )
    ).body
    assert (decrypted.plaintext, decrypted.key_version_id) == (secret, version)


def test_hardware_instance_keys_with_both_sdks(connector):
    """CreateKey on the hardware instance (keys generated inside its PKCS#11 token), crypto,
    versions and rotation policy through both SDKs."""
    client = tea(connector)
    created = client.create_key(
        tea_models.CreateKeyRequest(
            dkmsinstance_id=connector.hardware_instance, key_spec="Aliyun_AES_128"
        )
    ).body.key_metadata
    assert (created.protection_level, created.key_spec) == ("HSM", "Aliyun_AES_128")
    assert created.dkmsinstance_id == connector.hardware_instance
    key_id = created.key_id
    blob = client.encrypt(
        tea_models.EncryptRequest(key_id=key_id, plaintext=PLAINTEXT, encryption_context=CONTEXT)
    ).body.ciphertext_blob
    version = client.create_key_version(tea_models.CreateKeyVersionRequest(key_id=key_id)).body.key_version
    decrypted = client.decrypt(
        tea_models.DecryptRequest(ciphertext_blob=blob, encryption_context=CONTEXT)
    ).body
    assert decrypted.plaintext == PLAINTEXT and decrypted.key_version_id != version.key_version_id
    encrypted = client.encrypt(tea_models.EncryptRequest(key_id=key_id, plaintext="v2")).body
    assert encrypted.key_version_id == version.key_version_id
    client.update_rotation_policy(
        tea_models.UpdateRotationPolicyRequest(
            key_id=key_id, enable_automatic_rotation=True, rotation_interval="90d"
        )
    )
    listed = client.list_key_versions(tea_models.ListKeyVersionsRequest(key_id=key_id)).body
    assert listed.total_count == 2

    call = classic(connector)
    request = CreateKeyRequest.CreateKeyRequest()
    request.set_DKMSInstanceId(connector.hardware_instance)
    metadata = call(request)["KeyMetadata"]
    assert (metadata["ProtectionLevel"], metadata["KeySpec"]) == ("HSM", "Aliyun_AES_256")
    request = DescribeKeyRequest.DescribeKeyRequest()
    request.set_KeyId(key_id)
    described = call(request)["KeyMetadata"]
    assert (described["AutomaticRotation"], described["RotationInterval"]) == ("Enabled", "7776000s")
    assert described["PrimaryKeyVersion"] == version.key_version_id

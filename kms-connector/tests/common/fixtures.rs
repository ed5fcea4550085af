//! Fixtures of the store suite: fixed times, ids and record builders.

use kms_connector::store::{
    Alias, AuditEvent, AutomaticRotation, ConnectionState, InstanceKind, KeySpec, KeyState,
    KeyUsage, KeyVersion, NewInstance, NewKey, Origin, ProtectionLevel, StateChange, Store,
    UnixMillis,
};

/// 2025-06-15T15:06:40Z.
pub const T0: UnixMillis = UnixMillis(1_750_000_000_000);
pub const DAY_SECS: i64 = 86_400;
pub const ACCOUNT: &str = "1540355698848";
pub const REGION: &str = "cn-hangzhou";

pub fn instance(id: &str, kind: InstanceKind) -> NewInstance {
    NewInstance {
        instance_id: id.to_owned(),
        kind,
        name: format!("{id} name"),
        spec: r#"{"endpoint":"https://xki.example:8443","access_key_id":"AK1","secret_ref":"env:XKI_SECRET"}"#
            .to_owned(),
        connection_state: ConnectionState::Uninitialized,
        created_at: T0,
    }
}

pub fn new_key(key_id: &str, instance_id: &str, created_at: UnixMillis) -> NewKey {
    NewKey {
        key_id: key_id.to_owned(),
        account_id: ACCOUNT.to_owned(),
        region: REGION.to_owned(),
        instance_id: instance_id.to_owned(),
        key_spec: KeySpec::Aes256,
        key_usage: KeyUsage::EncryptDecrypt,
        origin: Origin::AliyunKms,
        protection_level: ProtectionLevel::Software,
        key_state: KeyState::Enabled,
        description: String::new(),
        creator: ACCOUNT.to_owned(),
        created_at,
        external_key_id: None,
        automatic_rotation: AutomaticRotation::Disabled,
        rotation_interval_secs: None,
        material_expire_time: None,
    }
}

pub fn version(key_id: &str, created_at: UnixMillis) -> KeyVersion {
    KeyVersion {
        key_version_id: uuid::Uuid::new_v4().to_string(),
        key_id: key_id.to_owned(),
        created_at,
        sealed_material: Some(vec![0xA5; 60]),
        backend_ref: None,
    }
}

/// A software instance `kst-sw` with one key per id, created one second apart.
pub async fn with_keys(store: &Store, ids: &[&str]) -> Vec<kms_connector::store::Key> {
    if store.get_instance("kst-sw").await.is_err() {
        store
            .create_instance(instance("kst-sw", InstanceKind::Software))
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let at = T0.plus_secs(i64::try_from(i).unwrap());
        keys.push(
            store
                .create_key(new_key(id, "kst-sw", at), version(id, at), vec![], None)
                .await
                .unwrap(),
        );
    }
    keys
}

pub fn change(expected: KeyState, new: KeyState, delete_date: Option<UnixMillis>) -> StateChange {
    StateChange {
        expected,
        new,
        delete_date,
    }
}

pub fn alias(name: &str, key_id: &str) -> Alias {
    Alias {
        account_id: ACCOUNT.to_owned(),
        region: REGION.to_owned(),
        alias_name: name.to_owned(),
        key_id: key_id.to_owned(),
        created_at: T0,
        updated_at: T0,
    }
}

pub fn event(id: &str, time: UnixMillis, key_id: Option<&str>, action: &str) -> AuditEvent {
    AuditEvent {
        event_id: id.to_owned(),
        time,
        request_id: format!("req-{id}"),
        principal: "AK1".to_owned(),
        account_id: ACCOUNT.to_owned(),
        action: action.to_owned(),
        key_id: key_id.map(str::to_owned),
        result: AuditEvent::SUCCESS.to_owned(),
        source_ip: Some("127.0.0.1".to_owned()),
        detail: None,
    }
}

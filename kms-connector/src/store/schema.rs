//! Table definitions, identical for both backends (`migrations/sqlite` and
//! `migrations/postgres` create the same columns with each database's types).
//!
//! Times are `BIGINT` Unix milliseconds, UTC (`UnixMillis`); booleans are `BOOLEAN` (an integer
//! 0/1 in SQLite); enumerations are their wire names as `TEXT`.

diesel::table! {
    instances (instance_id) {
        instance_id -> Text,
        kind -> Text,
        name -> Text,
        spec -> Text,
        connection_state -> Text,
        connection_error_code -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    keys (key_id) {
        key_id -> Text,
        account_id -> Text,
        region -> Text,
        instance_id -> Text,
        key_spec -> Text,
        key_usage -> Text,
        origin -> Text,
        protection_level -> Text,
        key_state -> Text,
        description -> Text,
        creator -> Text,
        created_at -> BigInt,
        delete_date -> Nullable<BigInt>,
        deletion_protection -> Bool,
        deletion_protection_description -> Nullable<Text>,
        external_key_id -> Nullable<Text>,
        primary_key_version -> Text,
        automatic_rotation -> Text,
        rotation_interval_secs -> Nullable<BigInt>,
        last_rotation_date -> Nullable<BigInt>,
        next_rotation_date -> Nullable<BigInt>,
        material_expire_time -> Nullable<BigInt>,
    }
}

diesel::table! {
    key_versions (key_version_id) {
        key_version_id -> Text,
        key_id -> Text,
        created_at -> BigInt,
        sealed_material -> Nullable<Binary>,
        backend_ref -> Nullable<Text>,
    }
}

diesel::table! {
    aliases (account_id, region, alias_name) {
        account_id -> Text,
        region -> Text,
        alias_name -> Text,
        key_id -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    tags (key_id, tag_key) {
        key_id -> Text,
        tag_key -> Text,
        tag_value -> Text,
    }
}

diesel::table! {
    key_policies (key_id, policy_name) {
        key_id -> Text,
        policy_name -> Text,
        policy -> Text,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        event_id -> Text,
        time -> BigInt,
        request_id -> Text,
        principal -> Text,
        account_id -> Text,
        action -> Text,
        key_id -> Nullable<Text>,
        result -> Text,
        source_ip -> Nullable<Text>,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    request_nonces (access_key_id, nonce) {
        access_key_id -> Text,
        nonce -> Text,
        expires_at -> BigInt,
    }
}

diesel::joinable!(keys -> instances (instance_id));
diesel::joinable!(key_versions -> keys (key_id));
diesel::joinable!(aliases -> keys (key_id));
diesel::joinable!(tags -> keys (key_id));
diesel::joinable!(key_policies -> keys (key_id));

diesel::allow_tables_to_appear_in_same_query!(
    instances,
    keys,
    key_versions,
    aliases,
    tags,
    key_policies,
);

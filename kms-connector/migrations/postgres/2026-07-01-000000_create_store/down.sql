DROP TABLE request_nonces;
DROP TABLE audit_events;
DROP TABLE key_policies;
DROP TABLE tags;
DROP TABLE aliases;
DROP TABLE key_versions;
DROP TABLE keys;
DROP TABLE instances;

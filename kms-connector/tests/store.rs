//! The store suite: every check runs against SQLite (a temp dir) and PostgreSQL (a fresh
//! database per test on the cluster of `HYOK_TEST_DATABASE_URL`, or the one
//! `scripts/pg-test.sh start` gives), through the same `Store` API. The checks live in
//! `common/{keys,lifecycle,metadata,trail}.rs`; each is an `async fn(&TestDb)`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDb;
use common::fixtures::instance;
use kms_connector::store::{InstanceKind, Store, StoreError, StoreOptions};

/// Instantiates every check once per backend: `sqlite::<check>` and `postgres::<check>`.
macro_rules! suite {
    ($($area:ident :: $check:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = crate::common::TestDb::sqlite().await;
                    crate::common::$area::$check(&db).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = crate::common::TestDb::postgres(stringify!($check)).await;
                    crate::common::$area::$check(&db).await;
                }
            )+
        }
    };
}

suite!(
    metadata::instances,
    keys::create_and_get_key,
    keys::create_key_is_atomic,
    keys::sealed_material_is_bit_exact,
    keys::list_keys_filters_and_paging,
    lifecycle::state_compare_and_set,
    lifecycle::state_race_between_replicas,
    lifecycle::description_protection_rotation,
    lifecycle::key_versions,
    lifecycle::purge_cascades,
    lifecycle::due_keys_rotate_once_across_replicas,
    metadata::aliases,
    metadata::tags_and_policies,
    metadata::concurrent_tag_writes_lose_nothing,
    trail::audit_trail,
    trail::nonce_replay_across_replicas,
);

// ---- backend-specific ------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_bare_path_wal_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/store.db");
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    store
        .create_instance(instance("kst-sw", InstanceKind::Software))
        .await
        .unwrap();
    assert!(
        dir.path().join("nested/dir/store.db-wal").exists(),
        "WAL mode"
    );
    drop(store);
    // Reopening runs no migration twice and sees the data.
    let again = Store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert_eq!(again.backend(), kms_connector::store::Backend::Sqlite);
    assert_eq!(again.list_instances().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replicas_migrate_together() {
    // Two processes' worth of pools opening one fresh file at once: the second waits for the
    // first's migration instead of failing on "table already exists".
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.ping().await.unwrap();
    a.create_instance(instance("kst-sw", InstanceKind::Software))
        .await
        .unwrap();
    assert_eq!(b.list_instances().await.unwrap().len(), 1);
}

#[tokio::test]
async fn open_refuses_bad_urls_and_reports_unreachable_postgres() {
    for url in ["", ":memory:", "sqlite::memory:", "mysql://localhost/db"] {
        assert!(
            matches!(Store::open(url).await, Err(StoreError::InvalidArgument(_))),
            "{url:?}"
        );
    }
    let options = StoreOptions {
        operation_timeout: std::time::Duration::from_millis(500),
        ..StoreOptions::default()
    };
    // Port 1 on loopback: nothing listens there.
    let error = Store::open_with("postgres://hyok:secret-password@127.0.0.1:1/none", options)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(!error.to_string().contains("secret-password"), "{error}");
}

#[tokio::test]
async fn postgres_replicas_migrate_together() {
    // Two replicas starting at once on a fresh database: the advisory lock serialises the
    // migrations, both open.
    let db = TestDb::postgres("migrate_together").await;
    let fresh = format!("{}_b", db.url);
    let admin = common::pg_admin_url();
    let name = fresh.rsplit('/').next().unwrap().to_owned();
    let fresh_db = {
        let admin = admin.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || {
            use diesel::{Connection, RunQueryDsl};
            let mut conn = diesel::PgConnection::establish(&admin).unwrap();
            diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE template0"))
                .execute(&mut conn)
                .unwrap();
        })
    };
    fresh_db.await.unwrap();
    let (a, b) = tokio::join!(Store::open(&fresh), Store::open(&fresh));
    let (a, b) = (a.unwrap(), b.unwrap());
    b.ping().await.unwrap();
    a.create_instance(instance("kst-sw", InstanceKind::Software))
        .await
        .unwrap();
    assert_eq!(b.list_instances().await.unwrap().len(), 1);
    drop((a, b));
    tokio::task::spawn_blocking(move || {
        use diesel::{Connection, RunQueryDsl};
        let mut conn = diesel::PgConnection::establish(&admin).unwrap();
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .unwrap();
    })
    .await
    .unwrap();
}

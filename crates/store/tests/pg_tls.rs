//! PostgreSQL over TLS: the store honours libpq's `sslmode` in `database.url`
//! (`disable`, `prefer` (the default), `require`, `verify-ca`, `verify-full`, with
//! `sslrootcert`, `sslcert` and `sslkey` for a private CA and client certificates).
//! Runs against `LEAKWATCH_TEST_PG`, whose server must offer TLS (Debian's PostgreSQL
//! does, with its self-signed "snakeoil" certificate).

use leakwatch_store::Store;

fn admin_url() -> Option<String> {
    leakwatch_store::testing::required_env(leakwatch_store::testing::PG_ENV)
}

fn with_sslmode(url: &str, mode: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode={mode}")
}

async fn uses_tls(store: &Store) -> bool {
    let Store::Postgres(pg) = store else {
        panic!("not PostgreSQL")
    };
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pg.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    let Some(admin) = admin_url() else { return };
    let db = leakwatch_store::testing::fresh_pg_database(&admin)
        .await
        .unwrap();

    let tls = Store::connect(&with_sslmode(&db, "require")).await.unwrap();
    assert!(
        uses_tls(&tls).await,
        "sslmode=require gave a plain connection"
    );
    tls.close().await;

    let plain = Store::connect(&with_sslmode(&db, "disable")).await.unwrap();
    assert!(!uses_tls(&plain).await, "sslmode=disable gave TLS");
    plain.close().await;

    // The test server's self-signed certificate is not signed by any trusted root:
    // verification must refuse it rather than connect.
    let err = Store::connect(&with_sslmode(&db, "verify-full"))
        .await
        .expect_err("verify-full accepted a certificate no root signs");
    let msg = format!("{err:?}").to_lowercase();
    assert!(
        msg.contains("certificate") || msg.contains("tls") || msg.contains("issuer"),
        "{msg}"
    );
    leakwatch_store::testing::drop_pg_database(&admin, &db).await;
}

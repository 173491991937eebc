//! Broker credentials of meters, crews' phones, head-ends and leakwatch itself
//! (`device_credentials`, migration 0010). Only hashes are stored.

use crate::{Result, Store, StoreError};
use leakwatch_core::Timestamp;
use leakwatch_core::device::{DeviceCredential, DeviceKind};
use sqlx::Row;

fn kind_of(s: &str) -> Result<DeviceKind> {
    DeviceKind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("device kind {s:?}")))
}

fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<Timestamp> {
    chrono::DateTime::from_timestamp_millis(v)
        .ok_or_else(|| StoreError::Corrupt(format!("time {v} ms is out of range")))
}

impl Store {
    /// Stores a new hash for `username` (issue or rotate): the previous secret stops
    /// working, and a revoked identity becomes active again.
    pub async fn put_device_credential(
        &self,
        username: &str,
        kind: DeviceKind,
        secret_hash: &str,
        now: Timestamp,
    ) -> Result<()> {
        const PUT: &str = "INSERT INTO device_credentials \
            (username, kind, secret_hash, created_at, rotated_at, revoked_at) \
            VALUES ($1, $2, $3, $4, $4, NULL) \
            ON CONFLICT (username) DO UPDATE SET kind = excluded.kind, \
            secret_hash = excluded.secret_hash, rotated_at = excluded.rotated_at, \
            revoked_at = NULL";
        match self {
            Store::Postgres(p) => {
                sqlx::query(PUT)
                    .bind(username)
                    .bind(kind.as_str())
                    .bind(secret_hash)
                    .bind(now)
                    .execute(p.pool())
                    .await?;
            }
            Store::Sqlite(p) => {
                sqlx::query(PUT)
                    .bind(username)
                    .bind(kind.as_str())
                    .bind(secret_hash)
                    .bind(ms(now))
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// Revokes `username`'s credential; `false` if it had none or it was revoked already.
    pub async fn revoke_device_credential(&self, username: &str, now: Timestamp) -> Result<bool> {
        const SQL: &str = "UPDATE device_credentials SET revoked_at = $2 \
                           WHERE username = $1 AND revoked_at IS NULL";
        let n = match self {
            Store::Postgres(p) => sqlx::query(SQL)
                .bind(username)
                .bind(now)
                .execute(p.pool())
                .await?
                .rows_affected(),
            Store::Sqlite(p) => sqlx::query(SQL)
                .bind(username)
                .bind(ms(now))
                .execute(p)
                .await?
                .rows_affected(),
        };
        Ok(n > 0)
    }

    /// Every credential, revoked ones included, by username.
    pub async fn device_credentials(&self) -> Result<Vec<DeviceCredential>> {
        const SQL: &str = "SELECT username, kind, secret_hash, created_at, rotated_at, revoked_at \
                           FROM device_credentials ORDER BY username";
        match self {
            Store::Postgres(p) => sqlx::query(SQL)
                .fetch_all(p.pool())
                .await?
                .iter()
                .map(|r| {
                    Ok(DeviceCredential {
                        username: r.try_get("username")?,
                        kind: kind_of(r.try_get("kind")?)?,
                        secret_hash: r.try_get("secret_hash")?,
                        created_at: r.try_get("created_at")?,
                        rotated_at: r.try_get("rotated_at")?,
                        revoked_at: r.try_get("revoked_at")?,
                    })
                })
                .collect(),
            Store::Sqlite(p) => sqlx::query(SQL)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    Ok(DeviceCredential {
                        username: r.try_get("username")?,
                        kind: kind_of(r.try_get("kind")?)?,
                        secret_hash: r.try_get("secret_hash")?,
                        created_at: from_ms(r.try_get("created_at")?)?,
                        rotated_at: from_ms(r.try_get("rotated_at")?)?,
                        revoked_at: r
                            .try_get::<Option<i64>, _>("revoked_at")?
                            .map(from_ms)
                            .transpose()?,
                    })
                })
                .collect(),
        }
    }
}

//! The device credentials aggregate: broker credentials of meters, crews' phones,
//! head-ends and leakwatch itself (`device_credentials`, migration 0010). Only hashes
//! are stored.

use crate::db::{args, sql};
use crate::{Result, Store, StoreError};
use leakwatch_core::Timestamp;
use leakwatch_core::device::{DeviceCredential, DeviceKind};
use std::future::Future;

/// Broker credentials.
pub trait DeviceCredentialStore: Send + Sync {
    /// Stores a new hash for `username` (issue or rotate): the previous secret stops
    /// working, and a revoked identity becomes active again.
    fn put_device_credential(
        &self,
        username: &str,
        kind: DeviceKind,
        secret_hash: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Revokes `username`'s credential; `false` if it had none or it was revoked already.
    fn revoke_device_credential(
        &self,
        username: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Every credential, revoked ones included, by username.
    fn device_credentials(&self) -> impl Future<Output = Result<Vec<DeviceCredential>>> + Send;
}

/// The device credentials part of a [`Store`] ([`Store::device_credential_store`]).
#[derive(Clone, Debug)]
pub struct DeviceCredentials(pub(crate) Store);

fn kind_of(s: &str) -> Result<DeviceKind> {
    DeviceKind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("device kind {s:?}")))
}

impl DeviceCredentialStore for DeviceCredentials {
    async fn put_device_credential(
        &self,
        username: &str,
        kind: DeviceKind,
        secret_hash: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.0
            .exec()
            .execute(
                sql!(
                    "INSERT INTO device_credentials
                         (username, kind, secret_hash, created_at, rotated_at, revoked_at)
                     VALUES ($1, $2, $3, $4, $4, NULL)
                     ON CONFLICT (username) DO UPDATE SET kind = excluded.kind,
                         secret_hash = excluded.secret_hash, rotated_at = excluded.rotated_at,
                         revoked_at = NULL"
                ),
                args![username, kind.as_str(), secret_hash, now],
            )
            .await?;
        Ok(())
    }

    async fn revoke_device_credential(&self, username: &str, now: Timestamp) -> Result<bool> {
        let n = self
            .0
            .exec()
            .execute(
                sql!(
                    "UPDATE device_credentials SET revoked_at = $2
                     WHERE username = $1 AND revoked_at IS NULL"
                ),
                args![username, now],
            )
            .await?;
        Ok(n > 0)
    }

    async fn device_credentials(&self) -> Result<Vec<DeviceCredential>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT username, kind, secret_hash, created_at, rotated_at, revoked_at
                     FROM device_credentials ORDER BY username"
                ),
                args![],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceCredential {
                    username: r.text("username")?,
                    kind: kind_of(&r.text("kind")?)?,
                    secret_hash: r.text("secret_hash")?,
                    created_at: r.time("created_at")?,
                    rotated_at: r.time("rotated_at")?,
                    revoked_at: r.opt_time("revoked_at")?,
                })
            })
            .collect()
    }
}

//! What a store error means for the caller: the data's fault (never retry the same
//! data), or the database not being there (wait and retry).

use crate::StoreError;

impl StoreError {
    /// Whether the error comes from the data written, so that writing the same data
    /// again can never succeed: a value the database refuses (SQLSTATE class 22 on
    /// PostgreSQL), a constraint it breaks (class 23; SQLite `CONSTRAINT`, `TOOBIG`,
    /// `MISMATCH`, `RANGE`), or data the store itself refuses ([`StoreError::Corrupt`]).
    /// Anything else (a lost connection, a missing table, a full disk) is not the
    /// message's fault: the ingestor holds the batch and retries, and the operator acts.
    pub fn is_data_error(&self) -> bool {
        match self {
            StoreError::Corrupt(_) => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                let Some(code) = db.code() else { return false };
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(18 | 19 | 20 | 25))
                } else {
                    code.starts_with("22") || code.starts_with("23")
                }
            }
            StoreError::Database(sqlx::Error::Encode(_)) => true,
            _ => false,
        }
    }

    /// Whether waiting cannot help opening the store ([`Store::connect`]): a URL it
    /// cannot use, a migration that fails on its own, credentials refused (SQLSTATE
    /// class 28), a database that does not exist (3D), an SQLite file that cannot be
    /// opened. Anything else while connecting (refused or dropped connections, a proxy
    /// that closes at once, TLS handshakes cut short, time-outs) is the database not
    /// being there yet.
    pub fn is_permanent_at_connect(&self) -> bool {
        match self {
            StoreError::BadUrl(_) | StoreError::Corrupt(_) => true,
            StoreError::Migrate(_) => !self.is_retryable(),
            StoreError::Database(sqlx::Error::Configuration(_)) => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                    || db
                        .code()
                        .is_some_and(|c| c.starts_with("28") || c.starts_with("3D"))
            }
            _ => false,
        }
    }
}

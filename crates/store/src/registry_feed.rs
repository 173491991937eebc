//! The registry as a running service sees it: each meter with the time the registry
//! first knew it, and a feed of changes made by anyone (the API, `leakwatch meters
//! import` in another process, another leakwatch) while the service runs.
//!
//! PostgreSQL announces every insert or update of a meter on the channel
//! `leakwatch_meters` once its transaction commits (a trigger, migration 0008); the
//! feed listens and reloads the meters named. SQLite has no notifications: every
//! write raises the meter's `rev`, and the feed polls for higher revisions.

use crate::db::{Row, args, sql};
use crate::meters::{meter_cols, meter_from_row};
use crate::{Result, Store};
use leakwatch_core::{Meter, MeterId, Timestamp};
use sqlx::Row as _;
use std::time::Duration;

/// The PostgreSQL channel the `meters` trigger notifies (payload: the meter id).
pub const METERS_CHANNEL: &str = "leakwatch_meters";

/// A meter and when the registry first knew it (set on insert, never changed by a
/// later import).
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub meter: Meter,
    pub registered_at: Timestamp,
}

/// What the feed saw.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryUpdate {
    /// These meters were inserted or changed.
    Changed(Vec<Registered>),
    /// The whole registry (at the start, or after the feed may have missed changes).
    Reload(Vec<Registered>),
}

/// Changes to the registry as they commit. Create one with [`Store::registry_feed`];
/// call [`RegistryFeed::next`] in a loop (after an error, wait and call it again).
/// On PostgreSQL it holds one of the pool's connections (the LISTEN) until dropped:
/// drop it before [`Store::close`], which waits for every connection.
pub struct RegistryFeed {
    store: Store,
    poll: Duration,
    state: FeedState,
}

enum FeedState {
    /// Nothing loaded yet: the next call loads everything.
    Start,
    /// SQLite: the highest revision seen.
    Polling { rev: i64 },
    /// PostgreSQL: listening.
    Listening(Box<sqlx::postgres::PgListener>),
}

impl std::fmt::Debug for RegistryFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFeed")
            .field("backend", &self.store.backend())
            .field("poll", &self.poll)
            .finish()
    }
}

/// Most notifications taken before reloading them (one query per batch of ids).
const IDS_PER_QUERY: usize = 5_000;

impl Store {
    /// A feed of registry changes; SQLite is polled every `poll`.
    pub fn registry_feed(&self, poll: Duration) -> RegistryFeed {
        RegistryFeed {
            store: self.clone(),
            poll: poll.max(Duration::from_millis(10)),
            state: FeedState::Start,
        }
    }

    /// One meter with its registration time, if known.
    pub async fn registered_meter(&self, id: &MeterId) -> Result<Option<Registered>> {
        Ok(self
            .registered_meters(std::slice::from_ref(id))
            .await?
            .pop())
    }

    /// The meters of `ids` that the registry knows, with their registration time.
    pub async fn registered_meters(&self, ids: &[MeterId]) -> Result<Vec<Registered>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(|m| m.as_str().to_owned()).collect();
        let rows = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    meter_cols!(),
                    ", registered_at FROM meters WHERE id = ANY($1)"
                ),
                args![ids],
            )
            .await?;
        rows.iter().map(registered).collect()
    }
}

/// A meter with its registration time (none stored: the epoch).
fn registered(row: &Row) -> Result<Registered> {
    Ok(Registered {
        meter: meter_from_row(row)?,
        registered_at: row
            .opt_time("registered_at")?
            .unwrap_or(chrono::DateTime::UNIX_EPOCH),
    })
}

impl RegistryFeed {
    /// Waits for the next change to the registry (the first call returns the whole
    /// registry). On an error the feed starts over with a reload at the next call.
    pub async fn next(&mut self) -> Result<RegistryUpdate> {
        let result = self.step().await;
        if result.is_err() {
            self.state = FeedState::Start;
        }
        result
    }

    async fn step(&mut self) -> Result<RegistryUpdate> {
        match (&mut self.state, &self.store) {
            (FeedState::Start, Store::Postgres(p)) => {
                // Listen first, then load: nothing committed in between is missed.
                let mut listener = sqlx::postgres::PgListener::connect_with(p.pool()).await?;
                listener.listen(METERS_CHANNEL).await?;
                let all = all_pg(p.pool()).await?;
                self.state = FeedState::Listening(Box::new(listener));
                Ok(RegistryUpdate::Reload(all))
            }
            (FeedState::Start, Store::Sqlite(pool)) => {
                let (all, rev) = since_sqlite(pool, None).await?;
                self.state = FeedState::Polling { rev };
                Ok(RegistryUpdate::Reload(all))
            }
            (FeedState::Listening(listener), Store::Postgres(p)) => {
                let Some(first) = listener.try_recv().await? else {
                    // The connection was lost: what was announced meanwhile is gone.
                    let all = all_pg(p.pool()).await?;
                    return Ok(RegistryUpdate::Reload(all));
                };
                let mut ids = vec![first.payload().to_owned()];
                while ids.len() < IDS_PER_QUERY
                    && let Some(n) = listener.next_buffered()
                {
                    ids.push(n.payload().to_owned());
                }
                ids.sort_unstable();
                ids.dedup();
                let ids: Vec<MeterId> = ids
                    .into_iter()
                    .filter_map(|s| MeterId::parse(s).ok())
                    .collect();
                Ok(RegistryUpdate::Changed(
                    self.store.registered_meters(&ids).await?,
                ))
            }
            (FeedState::Polling { rev }, Store::Sqlite(pool)) => loop {
                tokio::time::sleep(self.poll).await;
                let (changed, next) = since_sqlite(pool, Some(*rev)).await?;
                if !changed.is_empty() {
                    *rev = next;
                    return Ok(RegistryUpdate::Changed(changed));
                }
            },
            _ => unreachable!("the feed's state follows its store's backend"),
        }
    }
}

async fn all_pg(pool: &sqlx::PgPool) -> Result<Vec<Registered>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        meter_cols!(),
        ", registered_at FROM meters ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| registered(&Row::Pg(row)))
        .collect()
}

/// Meters with a revision above `after` (all when `None`) and the highest revision.
async fn since_sqlite(
    pool: &sqlx::SqlitePool,
    after: Option<i64>,
) -> Result<(Vec<Registered>, i64)> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        meter_cols!(),
        ", registered_at, rev FROM meters WHERE rev > ?1 ORDER BY rev"
    ))
    .bind(after.unwrap_or(i64::MIN))
    .fetch_all(pool)
    .await?;
    let mut rev = after.unwrap_or(0);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        rev = rev.max(row.try_get("rev")?);
        out.push(registered(&Row::Sqlite(row))?);
    }
    Ok((out, rev))
}

//! The accounts aggregate (migration 0011): people's accounts, their browser sessions,
//! the API tokens of integrations and devices, and the audit of changes to accounts
//! and tokens. Only hashes are stored: passwords as argon2id PHC strings (hashed by
//! the caller), session ids and token secrets as SHA-256 hex of the random value.
//!
//! A change to an account and its audit row commit in one transaction; so does the
//! dropping of the account's sessions when its password changes or it is disabled.

use crate::db::{Exec, Row, args, sql};
use crate::{Result, Store, StoreError, is_unique_violation, parse_crew_id, parse_text};
use leakwatch_core::{CrewId, Role, Timestamp};
use std::future::Future;

/// A person's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub role: Role,
    /// The crew of a [`Role::Crew`] account (and only of one).
    pub crew: Option<CrewId>,
    /// argon2id, PHC string format.
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An account to create.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    pub name: &'a str,
    pub role: Role,
    pub crew: Option<&'a CrewId>,
    pub password_hash: &'a str,
}

/// A browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 (hex) of the id in the cookie.
    pub id_hash: String,
    pub account: String,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub last_seen_at: Timestamp,
}

/// An API token of an integration or a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    /// SHA-256 (hex) of the secret.
    pub secret_hash: String,
    pub role: Role,
    pub crew: Option<CrewId>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// An API token to create.
#[derive(Debug, Clone)]
pub struct NewApiToken<'a> {
    pub name: &'a str,
    pub secret_hash: &'a str,
    pub role: Role,
    pub crew: Option<&'a CrewId>,
}

/// One change to an account or token: who, what, to whom.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthAuditRecord {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    /// `account_created`, `password_changed`, `account_disabled`, `account_enabled`,
    /// `token_created`, `token_revoked`.
    pub action: String,
    /// `account:NAME` or `token:NAME`.
    pub subject: String,
    pub detail: Option<String>,
}

/// Accounts, sessions, API tokens and their audit.
pub trait AccountStore: Send + Sync {
    /// Creates an account; a taken name is [`StoreError::Conflict`], a crew that does
    /// not exist is [`StoreError::NotFound`], a crew on a non-crew role (or none on a
    /// crew role) [`StoreError::Conflict`].
    fn create_account(
        &self,
        account: &NewAccount<'_>,
        actor: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Account>> + Send;

    /// Replaces the password hash and ends the account's sessions.
    fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        actor: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Disables (ending its sessions) or enables an account.
    fn set_disabled(
        &self,
        name: &str,
        disabled: bool,
        actor: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    fn get_account(&self, name: &str) -> impl Future<Output = Result<Option<Account>>> + Send;

    /// Every account, by name.
    fn list_accounts(&self) -> impl Future<Output = Result<Vec<Account>>> + Send;

    /// How many accounts are enabled.
    fn count_enabled_accounts(&self) -> impl Future<Output = Result<i64>> + Send;

    fn create_session(&self, session: &Session) -> impl Future<Output = Result<()>> + Send;

    /// The session with this id hash and its account, when the session has not
    /// expired at `now` and the account is enabled.
    fn session(
        &self,
        id_hash: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<(Session, Account)>>> + Send;

    /// Records that the session was used at `now`.
    fn touch_session(
        &self,
        id_hash: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Ends a session; `false` if there was none.
    fn delete_session(&self, id_hash: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes the sessions expired at `now`; returns how many.
    fn delete_expired_sessions(&self, now: Timestamp) -> impl Future<Output = Result<u64>> + Send;

    /// Creates a token; a taken name is [`StoreError::Conflict`].
    fn create_api_token(
        &self,
        token: &NewApiToken<'_>,
        actor: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<ApiToken>> + Send;

    /// The unrevoked token whose secret hashes to `secret_hash`.
    fn api_token_by_hash(
        &self,
        secret_hash: &str,
    ) -> impl Future<Output = Result<Option<ApiToken>>> + Send;

    /// Revokes a token; `false` if it does not exist or was revoked already.
    fn revoke_api_token(
        &self,
        name: &str,
        actor: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Every token, revoked ones included, by name.
    fn list_api_tokens(&self) -> impl Future<Output = Result<Vec<ApiToken>>> + Send;

    /// The latest `limit` changes to accounts and tokens, newest first.
    fn auth_audit(&self, limit: u32) -> impl Future<Output = Result<Vec<AuthAuditRecord>>> + Send;
}

/// The accounts part of a [`Store`] ([`Store::account_store`]).
#[derive(Clone, Debug)]
pub struct Accounts(pub(crate) Store);

fn account_of(r: &Row) -> Result<Account> {
    Ok(Account {
        name: r.text("name")?,
        role: parse_text(&r.text("role")?, "role")?,
        crew: r.opt_text("crew_id")?.map(parse_crew_id).transpose()?,
        password_hash: r.text("password_hash")?,
        disabled: r.bool("disabled")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

fn token_of(r: &Row) -> Result<ApiToken> {
    Ok(ApiToken {
        name: r.text("name")?,
        secret_hash: r.text("secret_hash")?,
        role: parse_text(&r.text("role")?, "role")?,
        crew: r.opt_text("crew_id")?.map(parse_crew_id).transpose()?,
        created_at: r.time("created_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}

fn check_crew(role: Role, crew: Option<&CrewId>) -> Result<()> {
    match (role.needs_crew(), crew) {
        (true, None) => Err(StoreError::Conflict(
            "a crew member's account or token must name a crew".into(),
        )),
        (false, Some(_)) => Err(StoreError::Conflict(format!(
            "a {role} account or token has no crew"
        ))),
        _ => Ok(()),
    }
}

async fn crew_exists(exec: Exec<'_>, crew: &CrewId) -> Result<bool> {
    Ok(exec
        .fetch_optional(
            sql!("SELECT 1 AS one FROM crews WHERE id = $1"),
            args![crew.as_str()],
        )
        .await?
        .is_some())
}

async fn audit(
    exec: Exec<'_>,
    now: Timestamp,
    actor: &str,
    action: &str,
    subject: &str,
    detail: Option<&str>,
) -> Result<()> {
    exec.execute(
        sql!(
            "INSERT INTO auth_audit (at, actor, action, subject, detail)
             VALUES ($1, $2, $3, $4, $5)"
        ),
        args![now, actor, action, subject, detail],
    )
    .await?;
    Ok(())
}

impl AccountStore for Accounts {
    async fn create_account(
        &self,
        a: &NewAccount<'_>,
        actor: &str,
        now: Timestamp,
    ) -> Result<Account> {
        check_crew(a.role, a.crew)?;
        let mut tx = self.0.begin().await?;
        if let Some(c) = a.crew
            && !crew_exists(tx.exec(), c).await?
        {
            return Err(StoreError::NotFound(format!("crew {c}")));
        }
        let inserted = tx
            .exec()
            .execute(
                sql!(
                    "INSERT INTO accounts
                         (name, role, crew_id, password_hash, disabled, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, FALSE, $5, $5)"
                ),
                args![
                    a.name,
                    a.role.as_str(),
                    a.crew.map(|c| c.as_str()),
                    a.password_hash,
                    now
                ],
            )
            .await;
        match inserted {
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "account {} exists already",
                    a.name
                )));
            }
            r => r?,
        };
        let detail = match a.crew {
            Some(c) => format!("role {}, crew {c}", a.role),
            None => format!("role {}", a.role),
        };
        audit(
            tx.exec(),
            now,
            actor,
            "account_created",
            &format!("account:{}", a.name),
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        Ok(Account {
            name: a.name.to_owned(),
            role: a.role,
            crew: a.crew.cloned(),
            password_hash: a.password_hash.to_owned(),
            disabled: false,
            created_at: now,
            updated_at: now,
        })
    }

    async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.0.begin().await?;
        let n = tx
            .exec()
            .execute(
                sql!("UPDATE accounts SET password_hash = $2, updated_at = $3 WHERE name = $1"),
                args![name, password_hash, now],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("account {name}")));
        }
        tx.exec()
            .execute(sql!("DELETE FROM sessions WHERE account = $1"), args![name])
            .await?;
        audit(
            tx.exec(),
            now,
            actor,
            "password_changed",
            &format!("account:{name}"),
            None,
        )
        .await?;
        tx.commit().await
    }

    async fn set_disabled(
        &self,
        name: &str,
        disabled: bool,
        actor: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.0.begin().await?;
        let n = tx
            .exec()
            .execute(
                sql!("UPDATE accounts SET disabled = $2, updated_at = $3 WHERE name = $1"),
                args![name, disabled, now],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("account {name}")));
        }
        if disabled {
            tx.exec()
                .execute(sql!("DELETE FROM sessions WHERE account = $1"), args![name])
                .await?;
        }
        let action = if disabled {
            "account_disabled"
        } else {
            "account_enabled"
        };
        audit(
            tx.exec(),
            now,
            actor,
            action,
            &format!("account:{name}"),
            None,
        )
        .await?;
        tx.commit().await
    }

    async fn get_account(&self, name: &str) -> Result<Option<Account>> {
        self.0
            .exec()
            .fetch_optional(
                sql!(
                    "SELECT a.name, a.role, a.crew_id, a.password_hash, a.disabled,
                            a.created_at, a.updated_at
                     FROM accounts a WHERE a.name = $1"
                ),
                args![name],
            )
            .await?
            .as_ref()
            .map(account_of)
            .transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        self.0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT a.name, a.role, a.crew_id, a.password_hash, a.disabled,
                            a.created_at, a.updated_at
                     FROM accounts a ORDER BY a.name"
                ),
                args![],
            )
            .await?
            .iter()
            .map(account_of)
            .collect()
    }

    async fn count_enabled_accounts(&self) -> Result<i64> {
        self.0
            .exec()
            .fetch_one(
                sql!("SELECT COUNT(*) AS n FROM accounts WHERE NOT disabled"),
                args![],
            )
            .await?
            .int("n")
    }

    async fn create_session(&self, s: &Session) -> Result<()> {
        self.0
            .exec()
            .execute(
                sql!(
                    "INSERT INTO sessions
                         (id_hash, account, csrf_token, created_at, expires_at, last_seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                args![
                    &s.id_hash,
                    &s.account,
                    &s.csrf_token,
                    s.created_at,
                    s.expires_at,
                    s.last_seen_at
                ],
            )
            .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<(Session, Account)>> {
        let Some(r) = self
            .0
            .exec()
            .fetch_optional(
                sql!(
                    "SELECT s.id_hash, s.account, s.csrf_token, s.created_at AS s_created,
                            s.expires_at, s.last_seen_at,
                            a.name, a.role, a.crew_id, a.password_hash, a.disabled,
                            a.created_at, a.updated_at
                     FROM sessions s JOIN accounts a ON a.name = s.account
                     WHERE s.id_hash = $1 AND s.expires_at > $2 AND NOT a.disabled"
                ),
                args![id_hash, now],
            )
            .await?
        else {
            return Ok(None);
        };
        let session = Session {
            id_hash: r.text("id_hash")?,
            account: r.text("account")?,
            csrf_token: r.text("csrf_token")?,
            created_at: r.time("s_created")?,
            expires_at: r.time("expires_at")?,
            last_seen_at: r.time("last_seen_at")?,
        };
        Ok(Some((session, account_of(&r)?)))
    }

    async fn touch_session(&self, id_hash: &str, now: Timestamp) -> Result<()> {
        self.0
            .exec()
            .execute(
                sql!("UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1"),
                args![id_hash, now],
            )
            .await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        Ok(self
            .0
            .exec()
            .execute(
                sql!("DELETE FROM sessions WHERE id_hash = $1"),
                args![id_hash],
            )
            .await?
            > 0)
    }

    async fn delete_expired_sessions(&self, now: Timestamp) -> Result<u64> {
        self.0
            .exec()
            .execute(
                sql!("DELETE FROM sessions WHERE expires_at <= $1"),
                args![now],
            )
            .await
    }

    async fn create_api_token(
        &self,
        t: &NewApiToken<'_>,
        actor: &str,
        now: Timestamp,
    ) -> Result<ApiToken> {
        check_crew(t.role, t.crew)?;
        let mut tx = self.0.begin().await?;
        if let Some(c) = t.crew
            && !crew_exists(tx.exec(), c).await?
        {
            return Err(StoreError::NotFound(format!("crew {c}")));
        }
        let inserted = tx
            .exec()
            .execute(
                sql!(
                    "INSERT INTO api_tokens (name, secret_hash, role, crew_id, created_at)
                     VALUES ($1, $2, $3, $4, $5)"
                ),
                args![
                    t.name,
                    t.secret_hash,
                    t.role.as_str(),
                    t.crew.map(|c| c.as_str()),
                    now
                ],
            )
            .await;
        match inserted {
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a token named {} exists already (revoked tokens keep their name)",
                    t.name
                )));
            }
            r => r?,
        };
        let detail = match t.crew {
            Some(c) => format!("role {}, crew {c}", t.role),
            None => format!("role {}", t.role),
        };
        audit(
            tx.exec(),
            now,
            actor,
            "token_created",
            &format!("token:{}", t.name),
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        Ok(ApiToken {
            name: t.name.to_owned(),
            secret_hash: t.secret_hash.to_owned(),
            role: t.role,
            crew: t.crew.cloned(),
            created_at: now,
            revoked_at: None,
        })
    }

    async fn api_token_by_hash(&self, secret_hash: &str) -> Result<Option<ApiToken>> {
        self.0
            .exec()
            .fetch_optional(
                sql!(
                    "SELECT name, secret_hash, role, crew_id, created_at, revoked_at
                     FROM api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL"
                ),
                args![secret_hash],
            )
            .await?
            .as_ref()
            .map(token_of)
            .transpose()
    }

    async fn revoke_api_token(&self, name: &str, actor: &str, now: Timestamp) -> Result<bool> {
        let mut tx = self.0.begin().await?;
        let n = tx
            .exec()
            .execute(
                sql!(
                    "UPDATE api_tokens SET revoked_at = $2
                     WHERE name = $1 AND revoked_at IS NULL"
                ),
                args![name, now],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        audit(
            tx.exec(),
            now,
            actor,
            "token_revoked",
            &format!("token:{name}"),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        self.0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT name, secret_hash, role, crew_id, created_at, revoked_at
                     FROM api_tokens ORDER BY name"
                ),
                args![],
            )
            .await?
            .iter()
            .map(token_of)
            .collect()
    }

    async fn auth_audit(&self, limit: u32) -> Result<Vec<AuthAuditRecord>> {
        self.0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT id, at, actor, action, subject, detail
                     FROM auth_audit ORDER BY id DESC LIMIT $1"
                ),
                args![i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(AuthAuditRecord {
                    id: r.int("id")?,
                    at: r.time("at")?,
                    actor: r.text("actor")?,
                    action: r.text("action")?,
                    subject: r.text("subject")?,
                    detail: r.opt_text("detail")?,
                })
            })
            .collect()
    }
}

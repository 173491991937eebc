//! People's accounts and integrations' API tokens on the command line
//! (`leakwatch user ...`, `leakwatch token ...`), the bootstrap admin of a fresh
//! deployment, and the demo's accounts.
//!
//! Passwords are read from standard input (a prompt without echo on a terminal, else
//! the first line), never from an argument; token secrets are printed once, to
//! standard output, and never logged. Changes are recorded in the store's audit with
//! the operating-system user as the actor (`cli:USER`).

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use leakwatch_api::secret;
use leakwatch_core::{CrewId, Role};
use leakwatch_store::{AccountStore, NewAccount, NewApiToken, Store, StoreError};
use std::io::{BufRead, IsTerminal};

/// `leakwatch user ...`
#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from standard input.
    Add(UserAdd),
    /// Set a new password (read from standard input); ends the account's sessions.
    Passwd { name: String },
    /// Disable an account; ends its sessions.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// List the accounts.
    List,
}

#[derive(Args)]
pub struct UserAdd {
    /// The login name (1..64 of letters, digits, . _ @ -).
    pub name: String,
    /// admin, engineer, dispatcher or crew.
    #[arg(long)]
    pub role: Role,
    /// The crew of a crew member (required with --role crew).
    #[arg(long)]
    pub crew: Option<String>,
}

/// `leakwatch token ...`
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token; its secret is printed once.
    Create(TokenCreate),
    /// Revoke a token.
    Revoke { name: String },
    /// List the tokens (never their secrets).
    List,
}

#[derive(Args)]
pub struct TokenCreate {
    /// A name for the integration or device (recorded as the actor of its changes).
    pub name: String,
    /// admin, engineer, dispatcher or crew.
    #[arg(long)]
    pub role: Role,
    /// The crew of a crew device (required with --role crew).
    #[arg(long)]
    pub crew: Option<String>,
}

fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn crew_of(role: Role, crew: Option<&str>) -> anyhow::Result<Option<CrewId>> {
    match (role.needs_crew(), crew) {
        (true, None) => bail!("--role crew needs --crew CREW_ID"),
        (false, Some(_)) => bail!("--crew goes with --role crew only"),
        (_, c) => c
            .map(|c| CrewId::parse(c).map_err(|e| anyhow::anyhow!("--crew: {e}")))
            .transpose(),
    }
}

/// A password from standard input: a prompt without echo (twice) on a terminal, else
/// the first line.
fn read_password() -> anyhow::Result<String> {
    let p = if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("password: ")?;
        let b = rpassword::prompt_password("again: ")?;
        if a != b {
            bail!("the two passwords differ");
        }
        a
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    secret::check_password(&p).map_err(anyhow::Error::msg)?;
    Ok(p)
}

async fn hash(password: String) -> anyhow::Result<String> {
    Ok(tokio::task::spawn_blocking(move || secret::hash_password(&password)).await??)
}

/// `leakwatch user ...`
pub async fn user(db_url: &str, command: UserCommand) -> anyhow::Result<()> {
    let store = Store::connect(db_url).await?;
    let accounts = store.account_store();
    let actor = cli_actor();
    let now = Utc::now();
    match command {
        UserCommand::Add(a) => {
            leakwatch_core::account::check_name(&a.name).map_err(anyhow::Error::msg)?;
            let crew = crew_of(a.role, a.crew.as_deref())?;
            let h = hash(read_password()?).await?;
            accounts
                .create_account(
                    &NewAccount {
                        name: &a.name,
                        role: a.role,
                        crew: crew.as_ref(),
                        password_hash: &h,
                    },
                    &actor,
                    now,
                )
                .await?;
            println!("account {} created ({})", a.name, a.role);
        }
        UserCommand::Passwd { name } => {
            let h = hash(read_password()?).await?;
            accounts.set_password(&name, &h, &actor, now).await?;
            println!("password of {name} changed; its sessions ended");
        }
        UserCommand::Disable { name } => {
            accounts.set_disabled(&name, true, &actor, now).await?;
            println!("account {name} disabled; its sessions ended");
        }
        UserCommand::Enable { name } => {
            accounts.set_disabled(&name, false, &actor, now).await?;
            println!("account {name} enabled");
        }
        UserCommand::List => {
            for a in accounts.list_accounts().await? {
                println!(
                    "{}\t{}\t{}\t{}\tcreated {}",
                    a.name,
                    a.role,
                    a.crew.as_ref().map(|c| c.as_str()).unwrap_or("-"),
                    if a.disabled { "disabled" } else { "enabled" },
                    a.created_at.to_rfc3339()
                );
            }
        }
    }
    store.close().await;
    Ok(())
}

/// `leakwatch token ...`
pub async fn token(db_url: &str, command: TokenCommand) -> anyhow::Result<()> {
    let store = Store::connect(db_url).await?;
    let accounts = store.account_store();
    let actor = cli_actor();
    let now = Utc::now();
    match command {
        TokenCommand::Create(t) => {
            leakwatch_core::account::check_name(&t.name).map_err(anyhow::Error::msg)?;
            let crew = crew_of(t.role, t.crew.as_deref())?;
            let secret = secret::new_api_token()?;
            accounts
                .create_api_token(
                    &NewApiToken {
                        name: &t.name,
                        secret_hash: &secret::sha256_hex(&secret),
                        role: t.role,
                        crew: crew.as_ref(),
                    },
                    &actor,
                    now,
                )
                .await?;
            eprintln!(
                "token {} created ({}); its secret is shown once, below: keep it safe",
                t.name, t.role
            );
            println!("{secret}");
        }
        TokenCommand::Revoke { name } => {
            if accounts.revoke_api_token(&name, &actor, now).await? {
                println!("token {name} revoked");
            } else {
                bail!("no active token named {name}");
            }
        }
        TokenCommand::List => {
            for t in accounts.list_api_tokens().await? {
                println!(
                    "{}\t{}\t{}\tcreated {}\t{}",
                    t.name,
                    t.role,
                    t.crew.as_ref().map(|c| c.as_str()).unwrap_or("-"),
                    t.created_at.to_rfc3339(),
                    t.revoked_at
                        .map(|r| format!("revoked {}", r.to_rfc3339()))
                        .unwrap_or_else(|| "active".into())
                );
            }
        }
    }
    store.close().await;
    Ok(())
}

/// The environment variable naming the bootstrap admin.
pub const BOOTSTRAP_ADMIN_ENV: &str = "LEAKWATCH_BOOTSTRAP_ADMIN";
/// The environment variable naming a file (a mounted secret) holding its password.
pub const BOOTSTRAP_PASSWORD_FILE_ENV: &str = "LEAKWATCH_BOOTSTRAP_ADMIN_PASSWORD_FILE";

/// With `LEAKWATCH_BOOTSTRAP_ADMIN=NAME` and `LEAKWATCH_BOOTSTRAP_ADMIN_PASSWORD_FILE=PATH`
/// set and no account in the store, creates the admin `NAME` with the password in the
/// file (its first line). Does nothing when an account exists. Returns whether it
/// created one.
pub async fn bootstrap_admin(store: &Store) -> anyhow::Result<bool> {
    let Ok(name) = std::env::var(BOOTSTRAP_ADMIN_ENV) else {
        return Ok(false);
    };
    let accounts = store.account_store();
    if !accounts.list_accounts().await?.is_empty() {
        return Ok(false);
    }
    let file = std::env::var(BOOTSTRAP_PASSWORD_FILE_ENV).with_context(|| {
        format!("{BOOTSTRAP_ADMIN_ENV} is set: {BOOTSTRAP_PASSWORD_FILE_ENV} must name the file holding its password")
    })?;
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    leakwatch_core::account::check_name(&name).map_err(anyhow::Error::msg)?;
    secret::check_password(&password).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let h = hash(password).await?;
    match accounts
        .create_account(
            &NewAccount {
                name: &name,
                role: Role::Admin,
                crew: None,
                password_hash: &h,
            },
            "bootstrap",
            Utc::now(),
        )
        .await
    {
        // Another replica made it first.
        Err(StoreError::Conflict(_)) => Ok(false),
        r => {
            r?;
            tracing::info!(admin = %name, "bootstrap admin created");
            Ok(true)
        }
    }
}

/// One login of the demo.
#[derive(Debug, Clone)]
pub struct DemoLogin {
    pub name: String,
    pub role: Role,
    pub crew: Option<CrewId>,
    pub password: String,
}

/// One account per role (the crew member in `crew`), each with a new random
/// password; an existing account of the same name gets the new password.
pub async fn demo_accounts(store: &Store, crew: &CrewId) -> anyhow::Result<Vec<DemoLogin>> {
    let accounts = store.account_store();
    let mut out = Vec::new();
    for role in Role::ALL {
        let name = role.as_str().to_owned();
        let crew = role.needs_crew().then(|| crew.clone());
        // 12 random characters: readable, typeable, not guessable.
        let password: String = secret::random_token()?.chars().take(12).collect();
        let h = hash(password.clone()).await?;
        let now = Utc::now();
        match accounts.get_account(&name).await? {
            Some(_) => accounts.set_password(&name, &h, "demo", now).await?,
            None => {
                accounts
                    .create_account(
                        &NewAccount {
                            name: &name,
                            role: *role,
                            crew: crew.as_ref(),
                            password_hash: &h,
                        },
                        "demo",
                        now,
                    )
                    .await?;
            }
        }
        out.push(DemoLogin {
            name,
            role: *role,
            crew,
            password,
        });
    }
    Ok(out)
}

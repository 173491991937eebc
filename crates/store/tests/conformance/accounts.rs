//! Accounts, sessions, API tokens and their audit ([`leakwatch_store::AccountStore`]).

use crate::support::*;
use leakwatch_core::Role;
use leakwatch_store::{AccountStore, NewAccount, NewApiToken, Session};

conformance!(
    case_accounts_create_change_disable_and_audit,
    case_sessions_expire_end_with_password_change_and_disable,
    case_api_tokens_found_by_hash_until_revoked,
);

async fn case_accounts_create_change_disable_and_audit(store: &Store) {
    let a = store.account_store();
    store.upsert_crews(&[crew("C1", true)]).await.unwrap();
    assert_eq!(a.count_enabled_accounts().await.unwrap(), 0);
    let admin = a
        .create_account(
            &NewAccount {
                name: "anna",
                role: Role::Admin,
                crew: None,
                password_hash: "$argon2id$x",
            },
            "cli",
            t(10),
        )
        .await
        .unwrap();
    assert_eq!(admin.role, Role::Admin);
    let c1 = cid("C1");
    a.create_account(
        &NewAccount {
            name: "carlo",
            role: Role::Crew,
            crew: Some(&c1),
            password_hash: "h2",
        },
        "anna",
        t(20),
    )
    .await
    .unwrap();
    // Names are unique; crews must exist and go with the crew role only.
    let dup = a
        .create_account(
            &NewAccount {
                name: "anna",
                role: Role::Engineer,
                crew: None,
                password_hash: "h",
            },
            "cli",
            t(30),
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
    let c9 = cid("C9");
    let missing = a
        .create_account(
            &NewAccount {
                name: "x",
                role: Role::Crew,
                crew: Some(&c9),
                password_hash: "h",
            },
            "cli",
            t(30),
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
    for (role, crew) in [(Role::Crew, None), (Role::Dispatcher, Some(&c1))] {
        let e = a
            .create_account(
                &NewAccount {
                    name: "y",
                    role,
                    crew,
                    password_hash: "h",
                },
                "cli",
                t(30),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    }
    assert_eq!(a.count_enabled_accounts().await.unwrap(), 2);
    let carlo = a.get_account("carlo").await.unwrap().unwrap();
    assert_eq!((carlo.role, carlo.crew.as_ref()), (Role::Crew, Some(&c1)));
    assert_eq!(carlo.created_at, t(20));

    a.set_password("carlo", "h3", "anna", t(40)).await.unwrap();
    assert_eq!(
        a.get_account("carlo").await.unwrap().unwrap().password_hash,
        "h3"
    );
    a.set_disabled("carlo", true, "anna", t(50)).await.unwrap();
    assert!(a.get_account("carlo").await.unwrap().unwrap().disabled);
    assert_eq!(a.count_enabled_accounts().await.unwrap(), 1);
    a.set_disabled("carlo", false, "anna", t(60)).await.unwrap();
    assert!(matches!(
        a.set_password("nobody", "h", "anna", t(70)).await,
        Err(StoreError::NotFound(_))
    ));
    let names: Vec<_> = a
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(names, ["anna", "carlo"]);

    let log = a.auth_audit(10).await.unwrap();
    let seen: Vec<_> = log
        .iter()
        .map(|r| {
            (
                r.actor.as_str(),
                r.action.as_str(),
                r.subject.as_str(),
                r.at,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("anna", "account_enabled", "account:carlo", t(60)),
            ("anna", "account_disabled", "account:carlo", t(50)),
            ("anna", "password_changed", "account:carlo", t(40)),
            ("anna", "account_created", "account:carlo", t(20)),
            ("cli", "account_created", "account:anna", t(10)),
        ]
    );
    assert_eq!(log[3].detail.as_deref(), Some("role crew, crew C1"));
}

fn session(id: &str, account: &str, created: i64, expires: i64) -> Session {
    Session {
        id_hash: id.into(),
        account: account.into(),
        csrf_token: format!("csrf-{id}"),
        created_at: t(created),
        expires_at: t(expires),
        last_seen_at: t(created),
    }
}

async fn case_sessions_expire_end_with_password_change_and_disable(store: &Store) {
    let a = store.account_store();
    for name in ["eva", "dino"] {
        a.create_account(
            &NewAccount {
                name,
                role: Role::Engineer,
                crew: None,
                password_hash: "h",
            },
            "cli",
            t(0),
        )
        .await
        .unwrap();
    }
    a.create_session(&session("s1", "eva", 100, 200))
        .await
        .unwrap();
    a.create_session(&session("s2", "eva", 100, 1000))
        .await
        .unwrap();
    a.create_session(&session("s3", "dino", 100, 1000))
        .await
        .unwrap();

    let (s, acc) = a.session("s1", t(150)).await.unwrap().unwrap();
    assert_eq!(
        (s.account.as_str(), s.csrf_token.as_str(), acc.name.as_str()),
        ("eva", "csrf-s1", "eva")
    );
    a.touch_session("s1", t(160)).await.unwrap();
    assert_eq!(
        a.session("s1", t(170))
            .await
            .unwrap()
            .unwrap()
            .0
            .last_seen_at,
        t(160)
    );
    // Expired: not found, and swept.
    assert!(a.session("s1", t(200)).await.unwrap().is_none());
    assert_eq!(a.delete_expired_sessions(t(200)).await.unwrap(), 1);
    assert!(a.session("nope", t(150)).await.unwrap().is_none());

    // A new password ends the account's sessions, not others'.
    a.set_password("eva", "h2", "eva", t(300)).await.unwrap();
    assert!(a.session("s2", t(301)).await.unwrap().is_none());
    assert!(a.session("s3", t(301)).await.unwrap().is_some());
    // Disabling ends them too; a disabled account's session never resolves.
    a.set_disabled("dino", true, "cli", t(400)).await.unwrap();
    assert!(a.session("s3", t(401)).await.unwrap().is_none());
    a.set_disabled("dino", false, "cli", t(402)).await.unwrap();
    assert!(a.session("s3", t(403)).await.unwrap().is_none());

    a.create_session(&session("s4", "dino", 500, 1000))
        .await
        .unwrap();
    assert!(a.delete_session("s4").await.unwrap());
    assert!(!a.delete_session("s4").await.unwrap());
    assert!(a.session("s4", t(501)).await.unwrap().is_none());
}

async fn case_api_tokens_found_by_hash_until_revoked(store: &Store) {
    let a = store.account_store();
    store.upsert_crews(&[crew("C1", true)]).await.unwrap();
    let c1 = cid("C1");
    a.create_api_token(
        &NewApiToken {
            name: "scada",
            secret_hash: "aa",
            role: Role::Engineer,
            crew: None,
        },
        "cli",
        t(1),
    )
    .await
    .unwrap();
    a.create_api_token(
        &NewApiToken {
            name: "phone-c1",
            secret_hash: "bb",
            role: Role::Crew,
            crew: Some(&c1),
        },
        "cli",
        t(2),
    )
    .await
    .unwrap();
    let dup = a
        .create_api_token(
            &NewApiToken {
                name: "scada",
                secret_hash: "cc",
                role: Role::Admin,
                crew: None,
            },
            "cli",
            t(3),
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
    let phone = a.api_token_by_hash("bb").await.unwrap().unwrap();
    assert_eq!(
        (phone.name.as_str(), phone.role, phone.crew.as_ref()),
        ("phone-c1", Role::Crew, Some(&c1))
    );
    assert!(a.api_token_by_hash("zz").await.unwrap().is_none());

    assert!(a.revoke_api_token("scada", "anna", t(10)).await.unwrap());
    assert!(!a.revoke_api_token("scada", "anna", t(11)).await.unwrap());
    assert!(!a.revoke_api_token("nobody", "anna", t(11)).await.unwrap());
    assert!(a.api_token_by_hash("aa").await.unwrap().is_none());
    let all = a.list_api_tokens().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].name, "scada");
    assert_eq!(all[1].revoked_at, Some(t(10)));
    let log = a.auth_audit(1).await.unwrap();
    assert_eq!(
        (log[0].action.as_str(), log[0].subject.as_str()),
        ("token_revoked", "token:scada")
    );
}

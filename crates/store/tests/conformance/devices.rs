//! Broker credentials of devices ([`leakwatch_store::DeviceCredentialStore`]).

use crate::support::*;
use leakwatch_core::device::DeviceKind;

conformance!(case_device_credentials_issue_rotate_revoke);

async fn case_device_credentials_issue_rotate_revoke(store: &Store) {
    assert!(store.device_credentials().await.unwrap().is_empty());
    store
        .put_device_credential("meter-M1", DeviceKind::Meter, "h1", t(100))
        .await
        .unwrap();
    store
        .put_device_credential("crew-C1", DeviceKind::Crew, "h2", t(200))
        .await
        .unwrap();
    let all = store.device_credentials().await.unwrap();
    let names: Vec<&str> = all.iter().map(|c| c.username.as_str()).collect();
    assert_eq!(names, vec!["crew-C1", "meter-M1"]);
    assert_eq!(all[1].kind, DeviceKind::Meter);
    assert_eq!(all[1].secret_hash, "h1");
    assert_eq!((all[1].created_at, all[1].rotated_at), (t(100), t(100)));
    assert_eq!(all[1].revoked_at, None);

    assert!(
        store
            .revoke_device_credential("meter-M1", t(300))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_device_credential("meter-M1", t(301))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_device_credential("nobody", t(301))
            .await
            .unwrap()
    );
    let m1 = store.device_credentials().await.unwrap().remove(1);
    assert_eq!(m1.revoked_at, Some(t(300)));

    // Rotating issues a new hash, keeps the creation time and lifts the revocation.
    store
        .put_device_credential("meter-M1", DeviceKind::Meter, "h3", t(400))
        .await
        .unwrap();
    let m1 = store.device_credentials().await.unwrap().remove(1);
    assert_eq!(m1.secret_hash, "h3");
    assert_eq!(
        (m1.created_at, m1.rotated_at, m1.revoked_at),
        (t(100), t(400), None)
    );
}

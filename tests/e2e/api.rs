//! The API's answers to bad requests: a 4xx with a JSON message that says what is
//! wrong, never a panic or an HTML error page.

use crate::support::{Backend, Service};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_that_says_why() {
    let Some(svc) = Service::start(Backend::EmbeddedSqlite, |_| {}).await else {
        return;
    };
    let cases: Vec<(&str, &str, Option<serde_json::Value>, u16, &str)> = vec![
        (
            "GET",
            "/api/v1/alerts?limit=0",
            None,
            400,
            "limit must be at least 1",
        ),
        (
            "GET",
            "/api/v1/alerts?limit=5000",
            None,
            400,
            "above the maximum",
        ),
        (
            "GET",
            "/api/v1/alerts?status=maybe",
            None,
            400,
            "invalid query",
        ),
        (
            "GET",
            "/api/v1/alerts?since=yesterday",
            None,
            400,
            "invalid query",
        ),
        ("GET", "/api/v1/alerts?cursor=abc", None, 400, "cursor"),
        (
            "GET",
            "/api/v1/alerts/999",
            None,
            404,
            "alert 999 does not exist",
        ),
        ("GET", "/api/v1/alerts/abc", None, 400, "invalid path"),
        (
            "GET",
            "/api/v1/meters/NOPE",
            None,
            404,
            "not in the registry",
        ),
        ("GET", "/api/v1/meters/a%20b", None, 400, "meter id"),
        (
            "GET",
            "/api/v1/meters/NOPE/readings",
            None,
            404,
            "not in the registry",
        ),
        (
            "GET",
            "/api/v1/crews/NOPE/jobs",
            None,
            404,
            "crew NOPE does not exist",
        ),
        (
            "GET",
            "/api/v1/work-orders/12",
            None,
            404,
            "work order 12 does not exist",
        ),
        ("GET", "/nowhere", None, 404, "no such route"),
        ("POST", "/api/v1/meters", Some(json!([])), 400, "empty"),
        (
            "POST",
            "/api/v1/meters",
            Some(json!({"meter_id": "x"})),
            422,
            "invalid request body",
        ),
        (
            "POST",
            "/api/v1/meters",
            Some(
                json!([{"meter_id": "M1", "district_id": "D1", "kind": "house", "lat": 1.0, "lon": 2.0}]),
            ),
            422,
            "kind: unknown meter kind",
        ),
        (
            "POST",
            "/api/v1/meters",
            Some(
                json!([{"meter_id": "M1", "district_id": "D1", "kind": "customer", "lat": 91.0, "lon": 2.0}]),
            ),
            422,
            "latitude",
        ),
        (
            "POST",
            "/api/v1/alerts/1/escalate",
            Some(json!({})),
            404,
            "alert 1 does not exist",
        ),
        (
            "POST",
            "/api/v1/alerts/1/dismiss",
            Some(json!({})),
            422,
            "reason",
        ),
        (
            "POST",
            "/api/v1/work-orders/1/transition",
            Some(json!({"action": "fly"})),
            422,
            "invalid request body",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let req = match method {
            "GET" => svc.http.get(svc.url(path)),
            _ => svc.http.post(svc.url(path)).json(&body.unwrap()),
        };
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: {v}"));
        assert_eq!(got, status, "{method} {path}: {msg}");
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} lacks {needle:?}"
        );
    }
    let (status, v) = svc.get("/healthz").await;
    assert_eq!((status, v), (200, json!({"status": "ok"})));
    svc.stop().await;
}

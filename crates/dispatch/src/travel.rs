//! Travel-time providers: how long a crew needs to drive from one place to another.
//!
//! Rules:
//! - [`BuiltinTravel`] needs no server: the great-circle distance
//!   ([`GeoPoint::distance_km`]) times `detour_factor`, driven at the lowest speed of the
//!   [`SpeedArea`]s that contain either end (a trip that starts or ends in the old town is
//!   driven at old-town speed), else at `default_speed_kmh`. A trip to the same place
//!   takes 0 s. It is pure and never fails.
//! - [`OsrmTravel`] asks an [OSRM](https://project-osrm.org) server's Table API, one request
//!   per matrix: `GET {url}/table/v1/{profile}/{lon,lat;...}?sources=..&destinations=..
//!   &annotations=duration`. Coordinates go **longitude first**. A `null` duration means
//!   OSRM found no route: it becomes [`f64::INFINITY`], which the crew choice never picks.
//!   An HTTP error, a timeout, a `code` other than `"Ok"` or a matrix of the wrong shape
//!   is a [`TravelError`] carrying the server's message.
//! - [`TravelTime::Osrm`] never fails: when the server does, it answers with its builtin
//!   `fallback` model, logs a warning and counts `leakwatch_travel_fallback_total`.
//!   [`Durations::provider`] says which model answered.
//!
//! The configuration is [`TravelConfig`], meant to sit at `[dispatch.travel]`; its
//! validation messages name keys from there.

use leakwatch_core::GeoPoint;
use serde::{Deserialize, Serialize};
#[cfg(feature = "service")]
use std::time::Duration;

/// Where the speed differs from the default: a town centre, a zone with narrow streets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedArea {
    /// For messages and for people reading the configuration.
    pub name: String,
    pub center: GeoPoint,
    /// A point at most this far (great-circle) from `center` is inside.
    pub radius_km: f64,
    /// Average door-to-door speed inside, km/h.
    pub speed_kmh: f64,
}

/// The builtin travel model: straight line × detour factor ÷ speed.
///
/// Defaults: `detour_factor = 1.3` (roads are about 30 % longer than the straight line
/// in Italian towns), `default_speed_kmh = 40`, no areas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuiltinTravel {
    /// Road distance ÷ straight-line distance; at least 1 in practice.
    pub detour_factor: f64,
    /// Speed outside every area, km/h.
    pub default_speed_kmh: f64,
    /// Areas with their own speed; where they overlap, the slowest applies.
    pub areas: Vec<SpeedArea>,
}

impl Default for BuiltinTravel {
    fn default() -> Self {
        Self {
            detour_factor: 1.3,
            default_speed_kmh: 40.0,
            areas: Vec::new(),
        }
    }
}

fn positive(key: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{key}: must be a positive number, got {v}"))
    }
}

impl BuiltinTravel {
    /// Checks that every number is positive and finite. Messages name the key relative to
    /// this table (`detour_factor`, `areas[1].speed_kmh`).
    pub fn validate(&self) -> Result<(), String> {
        positive("detour_factor", self.detour_factor)?;
        positive("default_speed_kmh", self.default_speed_kmh)?;
        for (i, a) in self.areas.iter().enumerate() {
            GeoPoint::new(a.center.lat, a.center.lon)
                .map_err(|e| format!("areas[{i}].center: {e}"))?;
            positive(&format!("areas[{i}].radius_km"), a.radius_km)?;
            positive(&format!("areas[{i}].speed_kmh"), a.speed_kmh)?;
        }
        Ok(())
    }

    /// The speed that applies at `p`: the lowest among the areas containing it, or the
    /// default.
    pub fn speed_kmh_at(&self, p: &GeoPoint) -> f64 {
        self.areas
            .iter()
            .filter(|a| a.center.distance_km(p) <= a.radius_km)
            .map(|a| a.speed_kmh)
            .fold(self.default_speed_kmh, f64::min)
    }

    /// Seconds to drive from `a` to `b`.
    pub fn duration_s(&self, a: &GeoPoint, b: &GeoPoint) -> f64 {
        let km = a.distance_km(b);
        if km == 0.0 {
            return 0.0;
        }
        let speed = self.speed_kmh_at(a).min(self.speed_kmh_at(b));
        km * self.detour_factor / speed * 3600.0
    }

    /// The matrix of [`BuiltinTravel::duration_s`]: one row per `from`, one column per `to`.
    pub fn matrix_s(&self, from: &[GeoPoint], to: &[GeoPoint]) -> Vec<Vec<f64>> {
        from.iter()
            .map(|a| to.iter().map(|b| self.duration_s(a, b)).collect())
            .collect()
    }
}

/// Why the routing server gave no travel times.
#[derive(Debug, thiserror::Error)]
pub enum TravelError {
    /// The request did not get an answer: connection refused, timeout, ...
    #[error("routing server unreachable: {0}")]
    Unreachable(String),
    /// The server answered with an error (HTTP status, or an OSRM `code` other than `Ok`).
    #[error("routing server refused the request ({code}): {message}")]
    Refused { code: String, message: String },
    /// The answer is not what the Table API promises.
    #[error("routing server sent a malformed answer: {0}")]
    Malformed(String),
}

impl TravelError {
    /// Is asking again later worth it? (A refused query would be refused again.)
    pub fn is_retryable(&self) -> bool {
        match self {
            TravelError::Unreachable(_) => true,
            TravelError::Refused { code, .. } => code.starts_with("HTTP 5"),
            TravelError::Malformed(_) => false,
        }
    }
}

#[cfg(feature = "service")]
/// A client of an OSRM server's Table API.
#[derive(Debug, Clone)]
pub struct OsrmTravel {
    /// Base URL, e.g. `http://osrm:5000` (no trailing `/table/...`).
    pub url: String,
    /// OSRM profile, e.g. `driving`.
    pub profile: String,
    /// Whole-request timeout.
    pub timeout_ms: u64,
    client: reqwest::Client,
}

#[cfg(feature = "service")]
/// The part of a Table API answer that we read.
#[derive(Deserialize)]
struct TableAnswer {
    code: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    durations: Option<Vec<Vec<Option<f64>>>>,
}

#[cfg(feature = "service")]
impl OsrmTravel {
    /// A client for the server at `url`. Fails only if the HTTP client cannot be built.
    pub fn new(
        url: impl Into<String>,
        profile: impl Into<String>,
        timeout_ms: u64,
    ) -> Result<Self, TravelError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .build()
            .map_err(|e| TravelError::Unreachable(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            url: url.into().trim_end_matches('/').to_owned(),
            profile: profile.into(),
            timeout_ms,
            client,
        })
    }

    /// The Table API request for `from` × `to` (coordinates longitude first).
    pub fn table_url(&self, from: &[GeoPoint], to: &[GeoPoint]) -> String {
        let coords: Vec<String> = from
            .iter()
            .chain(to)
            .map(|p| format!("{},{}", p.lon, p.lat))
            .collect();
        let idx =
            |r: std::ops::Range<usize>| r.map(|i| i.to_string()).collect::<Vec<_>>().join(";");
        format!(
            "{}/table/v1/{}/{}?sources={}&destinations={}&annotations=duration",
            self.url,
            self.profile,
            coords.join(";"),
            idx(0..from.len()),
            idx(from.len()..from.len() + to.len()),
        )
    }

    /// Seconds from each `from` to each `to`; unreachable pairs are infinite.
    pub async fn matrix_s(
        &self,
        from: &[GeoPoint],
        to: &[GeoPoint],
    ) -> Result<Vec<Vec<f64>>, TravelError> {
        if from.is_empty() || to.is_empty() {
            return Ok(vec![Vec::new(); from.len()]);
        }
        let resp = self
            .client
            .get(self.table_url(from, to))
            .send()
            .await
            .map_err(|e| TravelError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| TravelError::Unreachable(error_chain(&e)))?;
        let answer: Result<TableAnswer, _> = serde_json::from_slice(&body);
        if !status.is_success() {
            // OSRM explains its refusals in the JSON body; other servers may not.
            let (code, message) = match answer {
                Ok(a) => (a.code, a.message.unwrap_or_default()),
                Err(_) => (
                    format!("HTTP {}", status.as_u16()),
                    String::from_utf8_lossy(&body).chars().take(200).collect(),
                ),
            };
            return Err(TravelError::Refused { code, message });
        }
        let answer = answer.map_err(|e| TravelError::Malformed(e.to_string()))?;
        if answer.code != "Ok" {
            return Err(TravelError::Refused {
                code: answer.code,
                message: answer.message.unwrap_or_default(),
            });
        }
        let rows = answer
            .durations
            .ok_or_else(|| TravelError::Malformed("no durations".into()))?;
        if rows.len() != from.len() || rows.iter().any(|r| r.len() != to.len()) {
            return Err(TravelError::Malformed(format!(
                "expected a {}×{} durations matrix",
                from.len(),
                to.len()
            )));
        }
        Ok(rows
            .into_iter()
            .map(|r| r.into_iter().map(|d| d.unwrap_or(f64::INFINITY)).collect())
            .collect())
    }
}

#[cfg(feature = "service")]
/// The error and its causes on one line (reqwest hides "connection refused" in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A travel-time matrix and the model that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Durations {
    /// Seconds; one row per origin, one column per destination; infinite = no route.
    pub seconds: Vec<Vec<f64>>,
    /// `"builtin"`, `"osrm"`, or `"builtin-fallback"` when OSRM failed.
    pub provider: &'static str,
}

/// The travel-time provider the dispatcher uses.
#[derive(Debug, Clone)]
pub enum TravelTime {
    Builtin(BuiltinTravel),
    /// OSRM, and the builtin model when OSRM fails.
    #[cfg(feature = "service")]
    Osrm {
        osrm: OsrmTravel,
        fallback: BuiltinTravel,
    },
}

impl TravelTime {
    /// Seconds from each `from` (rows) to each `to` (columns).
    ///
    /// Both variants answer: OSRM's failures are logged, counted and replaced by the
    /// builtin model, so the `Err` case is reserved for providers without a fallback.
    pub async fn durations_s(
        &self,
        from: &[GeoPoint],
        to: &[GeoPoint],
    ) -> Result<Durations, TravelError> {
        match self {
            TravelTime::Builtin(b) => Ok(Durations {
                seconds: b.matrix_s(from, to),
                provider: "builtin",
            }),
            #[cfg(feature = "service")]
            TravelTime::Osrm { osrm, fallback } => match osrm.matrix_s(from, to).await {
                Ok(seconds) => Ok(Durations {
                    seconds,
                    provider: "osrm",
                }),
                Err(e) => {
                    tracing::warn!(error = %e, url = %osrm.url, "OSRM failed; using the builtin travel model");
                    metrics::counter!("leakwatch_travel_fallback_total").increment(1);
                    Ok(Durations {
                        seconds: fallback.matrix_s(from, to),
                        provider: "builtin-fallback",
                    })
                }
            },
        }
    }
}

/// Which travel model to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TravelProvider {
    #[default]
    Builtin,
    Osrm,
}

/// Settings of the travel-time provider, at `[dispatch.travel]`.
///
/// Defaults: `provider = "builtin"`, the [`BuiltinTravel`] defaults, no `osrm_url`,
/// `osrm_profile = "driving"`, `osrm_timeout_ms = 2000`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TravelConfig {
    pub provider: TravelProvider,
    /// The builtin model; with `provider = "osrm"` it is the fallback.
    pub builtin: BuiltinTravel,
    /// e.g. `http://osrm:5000`; required with `provider = "osrm"`. Plain HTTP only: this
    /// build has no TLS, so an OSRM server elsewhere needs a local proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub osrm_url: Option<String>,
    pub osrm_profile: String,
    /// A slow answer is worse than the builtin model's: keep this short.
    pub osrm_timeout_ms: u64,
}

impl Default for TravelConfig {
    fn default() -> Self {
        Self {
            provider: TravelProvider::Builtin,
            builtin: BuiltinTravel::default(),
            osrm_url: None,
            osrm_profile: "driving".into(),
            osrm_timeout_ms: 2000,
        }
    }
}

impl TravelConfig {
    /// Where this table sits in the configuration; messages name keys under it.
    pub const KEY: &'static str = "dispatch.travel";

    /// Checks what types alone cannot; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        let key = Self::KEY;
        self.builtin
            .validate()
            .map_err(|e| format!("{key}.builtin.{e}"))?;
        if self.provider != TravelProvider::Osrm {
            return Ok(());
        }
        let Some(url) = &self.osrm_url else {
            return Err(format!("{key}.osrm_url: required when provider = \"osrm\""));
        };
        if !url.starts_with("http://") {
            return Err(format!(
                "{key}.osrm_url: {url:?} must start with http:// (this build has no TLS)"
            ));
        }
        if self.osrm_profile.is_empty() || self.osrm_profile.contains(['/', '?', ';']) {
            return Err(format!(
                "{key}.osrm_profile: {:?} is not a profile name, e.g. \"driving\"",
                self.osrm_profile
            ));
        }
        if self.osrm_timeout_ms == 0 {
            return Err(format!("{key}.osrm_timeout_ms: must be at least 1"));
        }
        Ok(())
    }

    /// Validates, then builds the provider.
    pub fn build(&self) -> Result<TravelTime, String> {
        self.validate()?;
        match (&self.provider, &self.osrm_url) {
            #[cfg(not(feature = "service"))]
            (TravelProvider::Osrm, Some(_)) => Err(format!(
                "{}.provider: osrm needs the dispatch crate's `service` feature",
                Self::KEY
            )),
            #[cfg(feature = "service")]
            (TravelProvider::Osrm, Some(url)) => {
                let osrm = OsrmTravel::new(url, &self.osrm_profile, self.osrm_timeout_ms)
                    .map_err(|e| format!("{}.osrm_url: {e}", Self::KEY))?;
                Ok(TravelTime::Osrm {
                    osrm,
                    fallback: self.builtin.clone(),
                })
            }
            _ => Ok(TravelTime::Builtin(self.builtin.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint::new(lat, lon).unwrap()
    }

    fn florence() -> BuiltinTravel {
        BuiltinTravel {
            detour_factor: 1.3,
            default_speed_kmh: 45.0,
            areas: vec![SpeedArea {
                name: "centro".into(),
                center: p(43.77, 11.25),
                radius_km: 4.0,
                speed_kmh: 20.0,
            }],
        }
    }

    #[test]
    fn builtin_drives_slower_when_either_end_is_in_town() {
        let t = florence();
        let centre = p(43.77, 11.25);
        let east = p(43.77, 11.40); // ~12 km east, outside the centre
        let east2 = p(43.80, 11.40);
        let km = centre.distance_km(&east);
        let into_town = t.duration_s(&east, &centre);
        assert!((into_town - km * 1.3 / 20.0 * 3600.0).abs() < 1e-6);
        assert_eq!(into_town, t.duration_s(&centre, &east), "symmetric");
        let km2 = east.distance_km(&east2);
        let outside = t.duration_s(&east, &east2);
        assert!((outside - km2 * 1.3 / 45.0 * 3600.0).abs() < 1e-6);
        assert_eq!(t.duration_s(&east, &east), 0.0);
        // 10 km at the default 40 km/h, detour 1.3: 19.5 minutes
        let d = BuiltinTravel::default();
        let a = p(0.0, 0.0);
        let b = p(10.0 / 111.195, 0.0);
        assert!(
            (d.duration_s(&a, &b) - 1170.0).abs() < 1.0,
            "{}",
            d.duration_s(&a, &b)
        );
    }

    #[test]
    fn overlapping_areas_take_the_slowest() {
        let mut t = florence();
        t.areas.push(SpeedArea {
            name: "ztl".into(),
            center: p(43.77, 11.25),
            radius_km: 1.0,
            speed_kmh: 12.0,
        });
        assert_eq!(t.speed_kmh_at(&p(43.77, 11.25)), 12.0);
        assert_eq!(t.speed_kmh_at(&p(43.79, 11.25)), 20.0);
        assert_eq!(t.speed_kmh_at(&p(43.90, 11.25)), 45.0);
    }

    #[test]
    fn builtin_validation_names_the_key() {
        let mut t = florence();
        t.validate().unwrap();
        t.areas[0].speed_kmh = 0.0;
        assert!(t.validate().unwrap_err().starts_with("areas[0].speed_kmh:"));
        t.areas[0].speed_kmh = 20.0;
        t.areas[0].center.lat = 95.0;
        assert!(t.validate().unwrap_err().starts_with("areas[0].center:"));
        let t = BuiltinTravel {
            detour_factor: f64::NAN,
            ..BuiltinTravel::default()
        };
        assert!(t.validate().unwrap_err().starts_with("detour_factor:"));
        let cfg = TravelConfig {
            builtin: BuiltinTravel {
                default_speed_kmh: -1.0,
                ..BuiltinTravel::default()
            },
            ..TravelConfig::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .starts_with("dispatch.travel.builtin.default_speed_kmh:")
        );
    }

    #[test]
    fn config_reads_with_defaults_and_refuses_unknown_keys() {
        let cfg: TravelConfig = serde_json::from_str(r#"{"provider":"osrm"}"#).unwrap();
        assert_eq!(cfg.builtin, BuiltinTravel::default());
        assert_eq!(cfg.osrm_profile, "driving");
        assert_eq!(
            cfg.validate().unwrap_err(),
            "dispatch.travel.osrm_url: required when provider = \"osrm\""
        );
        assert!(cfg.build().is_err());
        let cfg: TravelConfig = serde_json::from_str(
            r#"{"provider":"osrm","osrm_url":"https://x","builtin":{"detour_factor":1.5}}"#,
        )
        .unwrap();
        assert_eq!(cfg.builtin.detour_factor, 1.5);
        assert_eq!(cfg.builtin.default_speed_kmh, 40.0);
        assert!(cfg.validate().unwrap_err().contains("osrm_url"));
        assert!(serde_json::from_str::<TravelConfig>(r#"{"speed":1}"#).is_err());
        assert!(serde_json::from_str::<BuiltinTravel>(r#"{"detour":1}"#).is_err());
        let cfg: TravelConfig =
            serde_json::from_str(r#"{"provider":"osrm","osrm_url":"http://osrm:5000"}"#).unwrap();
        #[cfg(feature = "service")]
        assert!(matches!(cfg.build().unwrap(), TravelTime::Osrm { .. }));
        #[cfg(not(feature = "service"))]
        assert!(cfg.build().unwrap_err().contains("`service` feature"));
        assert!(matches!(
            TravelConfig::default().build().unwrap(),
            TravelTime::Builtin(_)
        ));
    }

    #[cfg(feature = "service")]
    mod osrm {
        use super::*;
        use axum::Router;
        use axum::extract::State;
        use axum::http::{StatusCode, Uri};
        use std::sync::{Arc, Mutex};

        /// A fake OSRM: records each request's path and query, answers with a fixed status
        /// and body.
        #[derive(Clone)]
        struct Fake {
            seen: Arc<Mutex<Vec<String>>>,
            status: StatusCode,
            body: &'static str,
        }

        async fn answer(State(f): State<Fake>, uri: Uri) -> (StatusCode, &'static str) {
            f.seen.lock().unwrap().push(uri.to_string());
            (f.status, f.body)
        }

        /// Starts the fake on a free port; returns its base URL and the request log.
        async fn fake_osrm(
            status: StatusCode,
            body: &'static str,
        ) -> (String, Arc<Mutex<Vec<String>>>) {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let app = Router::new().fallback(answer).with_state(Fake {
                seen: seen.clone(),
                status,
                body,
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            (format!("http://{addr}/"), seen)
        }

        fn osrm_provider(url: &str) -> TravelTime {
            TravelTime::Osrm {
                osrm: OsrmTravel::new(url, "driving", 2000).unwrap(),
                fallback: florence(),
            }
        }

        #[tokio::test]
        async fn osrm_table_request_and_answer() {
            let (url, seen) = fake_osrm(
            StatusCode::OK,
            r#"{"code":"Ok","durations":[[600.5,null],[120,30]],"sources":[],"destinations":[]}"#,
        )
        .await;
            let from = [p(43.77, 11.25), p(43.8, 11.2)];
            let to = [p(43.7, 11.3), p(43.75, 11.1)];
            let d = osrm_provider(&url).durations_s(&from, &to).await.unwrap();
            assert_eq!(d.provider, "osrm");
            assert_eq!(
                d.seconds,
                vec![vec![600.5, f64::INFINITY], vec![120.0, 30.0]]
            );
            let seen = seen.lock().unwrap();
            assert_eq!(
                seen.as_slice(),
                [
                    "/table/v1/driving/11.25,43.77;11.2,43.8;11.3,43.7;11.1,43.75\
              ?sources=0;1&destinations=2;3&annotations=duration"
                ]
            );
        }

        #[tokio::test]
        async fn osrm_refusals_carry_the_server_message() {
            let (url, _) = fake_osrm(
                StatusCode::OK,
                r#"{"code":"NoTable","message":"no table for you"}"#,
            )
            .await;
            let osrm = OsrmTravel::new(&url, "driving", 2000).unwrap();
            let from = [p(43.77, 11.25)];
            let e = osrm.matrix_s(&from, &from).await.unwrap_err();
            assert!(
                matches!(&e, TravelError::Refused { code, .. } if code == "NoTable"),
                "{e}"
            );
            assert!(e.to_string().contains("no table for you"));
            assert!(!e.is_retryable());

            let (url, _) = fake_osrm(
            StatusCode::BAD_REQUEST,
            r#"{"code":"InvalidQuery","message":"Query string malformed close to position 28"}"#,
        )
        .await;
            let osrm = OsrmTravel::new(&url, "driving", 2000).unwrap();
            let e = osrm.matrix_s(&from, &from).await.unwrap_err();
            assert!(e.to_string().contains("InvalidQuery"), "{e}");
            assert!(
                e.to_string().contains("malformed close to position 28"),
                "{e}"
            );

            let (url, _) = fake_osrm(StatusCode::BAD_GATEWAY, "upstream down").await;
            let osrm = OsrmTravel::new(&url, "driving", 2000).unwrap();
            let e = osrm.matrix_s(&from, &from).await.unwrap_err();
            assert!(e.to_string().contains("HTTP 502"), "{e}");
            assert!(e.to_string().contains("upstream down"), "{e}");
            assert!(e.is_retryable());

            // a matrix of the wrong shape is not trusted
            let (url, _) = fake_osrm(StatusCode::OK, r#"{"code":"Ok","durations":[[1,2]]}"#).await;
            let osrm = OsrmTravel::new(&url, "driving", 2000).unwrap();
            let e = osrm.matrix_s(&from, &from).await.unwrap_err();
            assert!(matches!(e, TravelError::Malformed(_)), "{e}");
        }

        #[tokio::test]
        async fn osrm_failures_fall_back_to_the_builtin_model() {
            // a port nobody listens on: bind one, then let it go
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            let from = [p(43.77, 11.25)];
            let to = [p(43.77, 11.40), p(43.80, 11.40)];
            let provider = osrm_provider(&format!("http://{addr}"));
            let TravelTime::Osrm { osrm, .. } = &provider else {
                unreachable!()
            };
            let e = osrm.matrix_s(&from, &to).await.unwrap_err();
            assert!(matches!(e, TravelError::Unreachable(_)), "{e}");
            assert!(e.is_retryable());
            let d = provider.durations_s(&from, &to).await.unwrap();
            assert_eq!(d.provider, "builtin-fallback");
            assert_eq!(d.seconds, florence().matrix_s(&from, &to));

            // a refusal falls back too
            let (url, _) = fake_osrm(StatusCode::OK, r#"{"code":"TooBig","message":"x"}"#).await;
            let d = osrm_provider(&url).durations_s(&from, &to).await.unwrap();
            assert_eq!(d.provider, "builtin-fallback");
        }

        #[tokio::test]
        async fn osrm_timeout_is_unreachable() {
            // a server that accepts the connection and never answers
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let hold = tokio::spawn(async move {
                let (_sock, _) = listener.accept().await.unwrap();
                std::future::pending::<()>().await
            });
            let osrm = OsrmTravel::new(format!("http://{addr}"), "driving", 200).unwrap();
            let from = [p(43.77, 11.25)];
            let e = osrm.matrix_s(&from, &from).await.unwrap_err();
            assert!(matches!(e, TravelError::Unreachable(_)), "{e}");
            hold.abort();
        }

        #[tokio::test]
        async fn empty_requests_need_no_server() {
            let osrm = OsrmTravel::new("http://127.0.0.1:9", "driving", 100).unwrap();
            assert_eq!(
                osrm.matrix_s(&[p(1.0, 1.0)], &[]).await.unwrap(),
                vec![Vec::<f64>::new()]
            );
            assert!(osrm.matrix_s(&[], &[p(1.0, 1.0)]).await.unwrap().is_empty());
        }
    }
}

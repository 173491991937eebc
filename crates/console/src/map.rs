//! The map: meters with open alerts, active work orders and crews at their last
//! position (or home), drawn on the server as SVG in Web Mercator. With
//! `console.tile_url` set, the map's tiles from that server lie under the points (as
//! SVG images: the page's CSP admits that server's images only); without one, the
//! points lie over a plain background with a scale bar (no network needed). Every
//! point is a link, and the same points are listed in a table under the map.

use crate::{PageError, Shared, Viewer, local, page, raw, require};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use leakwatch_api::AppState;
use leakwatch_core::{AlertStatus, GeoPoint, MeterId};
use leakwatch_store::AlertQuery;
use maud::html;
use serde::Deserialize;
use std::collections::HashMap;
use std::f64::consts::PI;
use std::fmt::Write;

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/map", get(map_page))
}

/// What a point on the map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A meter (or a district's station) with open alerts.
    Alert,
    /// An active work order.
    Order,
    /// A crew at its last reported position.
    Crew,
    /// A crew at home (no position reported).
    CrewHome,
    /// The meter asked for (`?focus=`).
    Focus,
}

impl Kind {
    fn class(self) -> &'static str {
        match self {
            Kind::Alert => "pt-alert",
            Kind::Order => "pt-order",
            Kind::Crew => "pt-crew",
            Kind::CrewHome => "pt-crew home",
            Kind::Focus => "pt-focus",
        }
    }
    fn word(self) -> &'static str {
        match self {
            Kind::Alert => "alert",
            Kind::Order => "work order",
            Kind::Crew => "crew",
            Kind::CrewHome => "crew (at home)",
            Kind::Focus => "meter",
        }
    }
}

/// A point to draw.
#[derive(Debug, Clone)]
pub struct Point {
    pub kind: Kind,
    pub at: GeoPoint,
    /// A short label next to it.
    pub label: String,
    /// Its tooltip / the table's description.
    pub title: String,
    pub href: String,
}

const TILE: f64 = 256.0;
pub const WIDTH: f64 = 900.0;
pub const HEIGHT: f64 = 560.0;
const PAD: f64 = 40.0;

/// Web Mercator pixel coordinates of `p` at zoom `z` (256-pixel tiles).
pub fn world_px(p: GeoPoint, z: u32) -> (f64, f64) {
    let n = TILE * f64::from(1u32 << z);
    let lat = p.lat.clamp(-85.0511, 85.0511).to_radians();
    let x = (p.lon + 180.0) / 360.0 * n;
    let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / PI) / 2.0 * n;
    (x, y)
}

/// The view: zoom and the world pixel at the canvas's top left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub z: u32,
    pub ox: f64,
    pub oy: f64,
    /// The latitude the scale is measured at (the view's centre).
    pub lat: f64,
}

impl View {
    /// The largest zoom (up to 17) at which every point fits the canvas, centred.
    pub fn fit(points: &[GeoPoint]) -> View {
        let mut z = 17;
        loop {
            let px: Vec<(f64, f64)> = points.iter().map(|p| world_px(*p, z)).collect();
            let (x0, x1, y0, y1) = px.iter().fold(
                (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
                |(a, b, c, d), (x, y)| (a.min(*x), b.max(*x), c.min(*y), d.max(*y)),
            );
            let fits =
                px.is_empty() || (x1 - x0 <= WIDTH - 2.0 * PAD && y1 - y0 <= HEIGHT - 2.0 * PAD);
            if fits || z == 1 {
                let (cx, cy) = if px.is_empty() {
                    world_px(GeoPoint { lat: 0.0, lon: 0.0 }, z)
                } else {
                    ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
                };
                let lat = if points.is_empty() {
                    0.0
                } else {
                    points.iter().map(|p| p.lat).sum::<f64>() / points.len() as f64
                };
                return View {
                    z,
                    ox: cx - WIDTH / 2.0,
                    oy: cy - HEIGHT / 2.0,
                    lat,
                };
            }
            z -= 1;
        }
    }

    /// Where `p` is on the canvas.
    pub fn xy(&self, p: GeoPoint) -> (f64, f64) {
        let (x, y) = world_px(p, self.z);
        (x - self.ox, y - self.oy)
    }

    /// Metres per canvas pixel at the view's latitude.
    pub fn metres_per_px(&self) -> f64 {
        40_075_016.686 * self.lat.to_radians().cos() / (TILE * f64::from(1u32 << self.z))
    }

    /// The tiles under the canvas: (tile x, tile y, canvas x, canvas y).
    pub fn tiles(&self) -> Vec<(u32, u32, f64, f64)> {
        let n = 1i64 << self.z;
        let (tx0, tx1) = (
            (self.ox / TILE).floor() as i64,
            ((self.ox + WIDTH) / TILE).floor() as i64,
        );
        let (ty0, ty1) = (
            (self.oy / TILE).floor() as i64,
            ((self.oy + HEIGHT) / TILE).floor() as i64,
        );
        let mut out = Vec::new();
        for ty in ty0.max(0)..=ty1.min(n - 1) {
            for tx in tx0..=tx1 {
                out.push((
                    tx.rem_euclid(n) as u32,
                    ty as u32,
                    tx as f64 * TILE - self.ox,
                    ty as f64 * TILE - self.oy,
                ));
            }
        }
        out
    }
}

/// A round length for the scale bar (1, 2 or 5 times a power of ten metres) about
/// `target_px` pixels long: (metres, pixels).
pub fn scale_bar(metres_per_px: f64, target_px: f64) -> (f64, f64) {
    let want = metres_per_px * target_px;
    let mag = 10f64.powf(want.log10().floor());
    let m = [5.0, 2.0, 1.0]
        .iter()
        .map(|f| f * mag)
        .find(|m| *m <= want)
        .unwrap_or(mag);
    (m, m / metres_per_px)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tile's URL from the template (`{z}`, `{x}`, `{y}`, and `{s}` as `a`).
pub fn tile_url(template: &str, z: u32, x: u32, y: u32) -> String {
    template
        .replace("{z}", &z.to_string())
        .replace("{x}", &x.to_string())
        .replace("{y}", &y.to_string())
        .replace("{s}", "a")
}

/// The origin of the tile server, for the page's CSP (`https://tiles.example:8443`);
/// `None` when the template is not an http(s) URL or holds what a CSP cannot.
pub fn tile_origin(template: &str) -> Option<String> {
    let (scheme, rest) = template.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = rest.split('/').next()?.replace("{s}", "a");
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// The map as an SVG element.
pub fn map_svg(points: &[Point], tiles: Option<&str>) -> String {
    let view = View::fit(&points.iter().map(|p| p.at).collect::<Vec<_>>());
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"map\" id=\"map\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"map of alerts, work orders and crews\" xmlns=\"http://www.w3.org/2000/svg\">\
         <rect class=\"map-bg\" x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\"/>"
    );
    if let Some(t) = tiles {
        for (x, y, cx, cy) in view.tiles() {
            let _ = write!(
                s,
                "<image class=\"tile\" href=\"{}\" x=\"{cx:.1}\" y=\"{cy:.1}\" width=\"{TILE}\" height=\"{TILE}\"/>",
                esc(&tile_url(t, view.z, x, y))
            );
        }
    } else {
        // A faint grid every 100 px so distances can be judged.
        for i in 1..(WIDTH / 100.0) as i32 + 1 {
            let _ = write!(
                s,
                "<line class=\"grid\" x1=\"{x}\" y1=\"0\" x2=\"{x}\" y2=\"{HEIGHT}\"/>",
                x = i * 100
            );
        }
        for i in 1..(HEIGHT / 100.0) as i32 + 1 {
            let _ = write!(
                s,
                "<line class=\"grid\" x1=\"0\" y1=\"{y}\" x2=\"{WIDTH}\" y2=\"{y}\"/>",
                y = i * 100
            );
        }
    }
    // Crews first, then orders, alerts on top.
    let order = |k: Kind| match k {
        Kind::CrewHome | Kind::Crew => 0,
        Kind::Order => 1,
        Kind::Focus => 2,
        Kind::Alert => 3,
    };
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by_key(|p| order(p.kind));
    for p in sorted {
        let (x, y) = view.xy(p.at);
        let mark = match p.kind {
            Kind::Alert => format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"8\"/>"),
            Kind::Focus => format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"10\"/>"),
            Kind::Order => format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\"/>",
                x - 6.0,
                y - 6.0
            ),
            Kind::Crew | Kind::CrewHome => format!(
                "<polygon points=\"{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\"/>",
                y - 9.0,
                x - 8.0,
                y + 6.0,
                x + 8.0,
                y + 6.0
            ),
        };
        let _ = write!(
            s,
            "<a class=\"{}\" href=\"{}\"><title>{}</title>{mark}<text x=\"{:.1}\" y=\"{:.1}\">{}</text></a>",
            p.kind.class(),
            esc(&p.href),
            esc(&p.title),
            x + 10.0,
            y + 4.0,
            esc(&p.label)
        );
    }
    // The scale bar, bottom left.
    let (m, px) = scale_bar(view.metres_per_px(), 120.0);
    let words = if m >= 1000.0 {
        format!("{} km", m / 1000.0)
    } else {
        format!("{m} m")
    };
    let (x0, y0) = (16.0, HEIGHT - 18.0);
    let _ = write!(
        s,
        "<g class=\"scale\" id=\"map-scale\"><rect class=\"scale-bg\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"26\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{:.1}\" y2=\"{y0}\"/>\
         <line x1=\"{x0}\" y1=\"{:.1}\" x2=\"{x0}\" y2=\"{y0}\"/><line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{y0}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">{words}</text></g>",
        x0 - 6.0,
        y0 - 18.0,
        px + 70.0,
        x0 + px,
        y0 - 5.0,
        x0 + px,
        y0 - 5.0,
        x0 + px,
        x0 + px + 6.0,
        y0 + 1.0
    );
    s.push_str("</svg>");
    s
}

#[derive(Debug, Default, Deserialize)]
struct MapQuery {
    /// Only this district's alerts and orders.
    #[serde(default)]
    district: String,
    /// A meter to mark.
    #[serde(default)]
    focus: String,
}

async fn map_page(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Query(q): Query<MapQuery>,
) -> Result<Response, PageError> {
    require(&p, crate::meter::VIEW, "see the map")?;
    let meters: HashMap<MeterId, leakwatch_core::Meter> = s
        .store
        .all_meters()
        .await?
        .into_iter()
        .map(|m| (m.id.clone(), m))
        .collect();
    let in_district = |d: Option<&leakwatch_core::DistrictId>| {
        q.district.is_empty() || d.is_some_and(|d| d.as_str() == q.district)
    };
    let mut points = Vec::new();
    // Meters with open alerts: one point per meter (district alerts at the station).
    let mut per_place: HashMap<String, (GeoPoint, Vec<String>, String, String)> = HashMap::new();
    for st in [AlertStatus::Open, AlertStatus::Acknowledged] {
        for a in s
            .store
            .list_alerts(&AlertQuery {
                status: Some(st),
                limit: 1000,
                ..AlertQuery::default()
            })
            .await?
        {
            if !in_district(a.district_id.as_ref()) {
                continue;
            }
            let place = match (&a.meter_id, &a.district_id) {
                (Some(m), _) => meters.get(m).map(|x| {
                    (
                        m.to_string(),
                        x.location,
                        crate::meter::href(m),
                        m.to_string(),
                    )
                }),
                (None, Some(d)) => meters
                    .values()
                    .find(|x| &x.district == d && x.kind == leakwatch_core::MeterKind::Station)
                    .map(|x| {
                        (
                            format!("district {d}"),
                            x.location,
                            format!("/console/districts/{}", crate::url_encode(d.as_str())),
                            format!("district {d}"),
                        )
                    }),
                _ => None,
            };
            if let Some((key, at, href, label)) = place {
                let e = per_place
                    .entry(key)
                    .or_insert_with(|| (at, Vec::new(), href, label));
                e.1.push(format!(
                    "#{} {} ({})",
                    a.id,
                    a.kind.as_str(),
                    a.severity.as_str()
                ));
            }
        }
    }
    let mut alert_points: Vec<_> = per_place.into_values().collect();
    alert_points.sort_by(|a, b| a.3.cmp(&b.3));
    for (at, what, href, label) in alert_points {
        points.push(Point {
            kind: Kind::Alert,
            at,
            title: format!("{label}: {}", what.join(", ")),
            label,
            href,
        });
    }
    for o in s.store.active_work_orders().await? {
        if !in_district(o.district_id.as_ref()) {
            continue;
        }
        points.push(Point {
            kind: Kind::Order,
            at: o.location,
            label: format!("#{}", o.id),
            title: format!(
                "order #{} {} · {} · crew {} · {}",
                o.id,
                o.kind.as_str(),
                o.status.as_str(),
                o.crew_id
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "none".into()),
                o.summary
            ),
            href: format!("/console/board#order-{}", o.id),
        });
    }
    for r in s.store.list_crews().await? {
        let (kind, at, when) = match (r.crew.position, r.crew.position_at) {
            (Some(pos), at) => (Kind::Crew, pos, at.map(|t| local(&c, t))),
            (None, _) => (Kind::CrewHome, r.crew.home, None),
        };
        points.push(Point {
            kind,
            at,
            label: r.crew.id.to_string(),
            title: format!(
                "crew {} {}{}",
                r.crew.id,
                r.crew.name,
                when.map(|w| format!(" · position at {w}"))
                    .unwrap_or_else(|| " · at home (no position reported)".into())
            ),
            href: format!(
                "/console/board?crew={}",
                crate::url_encode(r.crew.id.as_str())
            ),
        });
    }
    if let Ok(f) = MeterId::parse(&q.focus)
        && let Some(m) = meters.get(&f)
    {
        points.push(Point {
            kind: Kind::Focus,
            at: m.location,
            label: m.id.to_string(),
            title: format!("meter {}", m.id),
            href: crate::meter::href(&m.id),
        });
    }
    let tiles = c
        .cfg
        .tile_url
        .as_deref()
        .filter(|t| tile_origin(t).is_some());
    let svg = map_svg(&points, tiles);
    let count = |k: &[Kind]| points.iter().filter(|p| k.contains(&p.kind)).count();
    let body = html! {
        h1 { "Map" @if !q.district.is_empty() { " of district " (q.district) } }
        p class="meta" #map-counts {
            span class="key pt-alert" {} " " (count(&[Kind::Alert])) " places with open alerts · "
            span class="key pt-order" {} " " (count(&[Kind::Order])) " active work orders · "
            span class="key pt-crew" {} " " (count(&[Kind::Crew, Kind::CrewHome])) " crews (hollow: at home, no position reported)"
            @if !q.district.is_empty() { " · " a href="/console/map" { "all districts" } }
        }
        div class="map-wrap" { (raw(svg)) }
        @if tiles.is_none() { p class="hint" { "No tile server is configured (console.tile_url): the points lie over a plain background; the grid is 100 px, see the scale." } }
        @else { p class="hint" { "Map tiles from " (tile_origin(tiles.unwrap_or_default()).unwrap_or_default()) "." } }
        table #map-points { thead { tr { th { "what" } th { "where" } th { "" } } }
            tbody { @for pt in &points { tr class=(pt.kind.class()) {
                td { (pt.kind.word()) } td { (format!("{:.5}, {:.5}", pt.at.lat, pt.at.lon)) }
                td { a href=(pt.href) { (pt.title) } }
            } } } }
    };
    let mut res = page(&p, "Map", "map", body).into_response();
    if let Some(origin) = tiles.and_then(tile_origin)
        && let Ok(v) = HeaderValue::from_str(&format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: {origin}; \
             connect-src 'self'; worker-src 'self'; manifest-src 'self'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'"
        ))
    {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gp(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint::new(lat, lon).unwrap()
    }

    #[test]
    fn mercator_matches_known_tiles() {
        // Zoom 0: the world is one 256-pixel tile, (0, 0) in its middle.
        let (x, y) = world_px(gp(0.0, 0.0), 0);
        assert!((x - 128.0).abs() < 1e-9 && (y - 128.0).abs() < 1e-9);
        // 43.77 N, 11.25 E is in tile x=4352, y=2986 at zoom 13 (the OSM slippy-map
        // formula: y = (1 - asinh(tan(lat)) / pi) / 2 * 2^z).
        let (x, y) = world_px(gp(43.77, 11.25), 13);
        assert_eq!(((x / 256.0) as u32, (y / 256.0) as u32), (4352, 2986));
    }

    #[test]
    fn the_view_fits_every_point_and_the_scale_is_round() {
        let pts = [gp(43.77, 11.25), gp(43.74, 11.20), gp(43.80, 11.30)];
        let v = View::fit(&pts);
        for p in pts {
            let (x, y) = v.xy(p);
            assert!((PAD - 1.0..=WIDTH - PAD + 1.0).contains(&x), "{x}");
            assert!((PAD - 1.0..=HEIGHT - PAD + 1.0).contains(&y), "{y}");
        }
        // One zoom more and they would not fit.
        let wider = View { z: v.z + 1, ..v };
        let xs: Vec<f64> = pts.iter().map(|p| world_px(*p, wider.z).0).collect();
        let ys: Vec<f64> = pts.iter().map(|p| world_px(*p, wider.z).1).collect();
        let span = |v: &[f64]| {
            v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min)
        };
        assert!(span(&xs) > WIDTH - 2.0 * PAD || span(&ys) > HEIGHT - 2.0 * PAD);
        // At zoom 12 near 44 N a pixel is about 27.5 m.
        let z12 = View {
            z: 12,
            ox: 0.0,
            oy: 0.0,
            lat: 43.77,
        };
        assert!(
            (z12.metres_per_px() - 27.56).abs() < 0.1,
            "{}",
            z12.metres_per_px()
        );
        let (m, px) = scale_bar(27.56, 120.0);
        assert_eq!(m, 2000.0);
        assert!((px - 2000.0 / 27.56).abs() < 1e-9);
        assert_eq!(scale_bar(1.0, 120.0).0, 100.0);
        // One point alone: the closest zoom.
        assert_eq!(View::fit(&[gp(45.0, 9.0)]).z, 17);
    }

    #[test]
    fn tiles_cover_the_canvas_from_the_configured_server() {
        let v = View::fit(&[gp(43.77, 11.25), gp(43.80, 11.30)]);
        let tiles = v.tiles();
        assert!(tiles.len() >= 8 && tiles.len() <= 24, "{}", tiles.len());
        assert!(tiles.iter().any(|t| t.2 <= 0.0 && t.3 <= 0.0));
        assert!(
            tiles
                .iter()
                .any(|t| t.2 + TILE >= WIDTH && t.3 + TILE >= HEIGHT)
        );
        assert_eq!(
            tile_url("https://{s}.tiles.example/{z}/{x}/{y}.png", 3, 4, 5),
            "https://a.tiles.example/3/4/5.png"
        );
        assert_eq!(
            tile_origin("https://tiles.example:8443/{z}/{x}/{y}.png").as_deref(),
            Some("https://tiles.example:8443")
        );
        assert_eq!(tile_origin("javascript:alert(1)"), None);
        assert_eq!(tile_origin("https://x'; script-src */{z}"), None);
        let pts = vec![Point {
            kind: Kind::Alert,
            at: gp(43.77, 11.25),
            label: "M-1".into(),
            title: "<b>".into(),
            href: "/console/meters/M-1".into(),
        }];
        let with = map_svg(&pts, Some("https://tiles.example/{z}/{x}/{y}.png"));
        assert!(with.contains("<image class=\"tile\" href=\"https://tiles.example/17/"));
        let without = map_svg(&pts, None);
        assert!(!without.contains("<image") && without.contains("class=\"grid\""));
        assert!(without.contains("&lt;b&gt;") && without.contains("id=\"map-scale\""));
    }
}

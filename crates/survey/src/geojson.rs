//! The network as GeoJSON: a `FeatureCollection` of `LineString` features, one per
//! pipe segment, with the segment's attributes as properties. What `leakwatch network
//! import` reads and the simulator writes.
//!
//! Properties: `id` (or the feature's own `id`), `district`, `pressure_class`,
//! `material` (`cast_iron`, `unprotected_steel`, `steel`, `polyethylene`, `other`),
//! `diameter_mm`, `year_laid`; optional `added_on` (`YYYY-MM-DD`, when the segment
//! entered the register; default 1 January of `year_laid`) and `last_surveyed`
//! (`YYYY-MM-DD`, the last whole survey known before leakwatch kept the history).
//! Coordinates are `[lon, lat]` (RFC 7946).

use crate::network::{Material, Segment};
use chrono::NaiveDate;
use leakwatch_core::{DistrictId, GeoPoint};
use serde_json::{Map, Value, json};
use std::collections::HashSet;

/// A segment read from GeoJSON, with the survey date the file may carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub segment: Segment,
    pub last_surveyed: Option<NaiveDate>,
}

/// What is wrong with one feature (or the file, when `feature` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", where_(.feature, .id), .property.as_ref().map(|p| format!(": property `{p}`")).unwrap_or_default())]
pub struct ImportError {
    /// Index of the feature in `features` (0-based).
    pub feature: Option<usize>,
    /// The feature's id, when it has a readable one.
    pub id: Option<String>,
    pub property: Option<String>,
    pub message: String,
}

fn where_(feature: &Option<usize>, id: &Option<String>) -> String {
    match (feature, id) {
        (Some(i), Some(id)) => format!("feature {i} (id {id:?})"),
        (Some(i), None) => format!("feature {i}"),
        (None, _) => "the file".to_owned(),
    }
}

/// At most this many errors are reported for one file.
pub const MAX_ERRORS: usize = 50;

/// Reads a FeatureCollection. `classes`, when given, are the pressure classes the
/// obligation table in force knows: any other is an error. Every feature is checked;
/// the errors (at most [`MAX_ERRORS`]) come back together, and nothing is returned
/// unless the whole file is good.
pub fn parse(text: &str, classes: Option<&[&str]>) -> Result<Vec<Imported>, Vec<ImportError>> {
    let file_err = |m: String| {
        vec![ImportError {
            feature: None,
            id: None,
            property: None,
            message: m,
        }]
    };
    let v: Value = serde_json::from_str(text).map_err(|e| file_err(format!("not JSON: {e}")))?;
    if v.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
        return Err(file_err(
            "expected a GeoJSON FeatureCollection (\"type\": \"FeatureCollection\")".into(),
        ));
    }
    let Some(features) = v.get("features").and_then(Value::as_array) else {
        return Err(file_err(
            "a FeatureCollection needs a `features` array".into(),
        ));
    };
    let mut out = Vec::with_capacity(features.len());
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (i, f) in features.iter().enumerate() {
        match feature(f, classes) {
            Ok(imp) => {
                if !seen.insert(imp.segment.id.clone()) {
                    errors.push(ImportError {
                        feature: Some(i),
                        id: Some(imp.segment.id.clone()),
                        property: Some("id".into()),
                        message: "the same id appears on an earlier feature".into(),
                    });
                }
                out.push(imp);
            }
            Err((property, message)) => errors.push(ImportError {
                feature: Some(i),
                id: feature_id(f),
                property,
                message,
            }),
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn feature_id(f: &Value) -> Option<String> {
    let id = f
        .get("properties")
        .and_then(|p| p.get("id"))
        .or_else(|| f.get("id"))?;
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

type FeatureError = (Option<String>, String);

fn prop_err(p: &str, m: impl Into<String>) -> FeatureError {
    (Some(p.to_owned()), m.into())
}

fn feature(f: &Value, classes: Option<&[&str]>) -> Result<Imported, FeatureError> {
    if f.get("type").and_then(Value::as_str) != Some("Feature") {
        return Err((None, "expected \"type\": \"Feature\"".into()));
    }
    let empty = Map::new();
    let props = match f.get("properties") {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => &empty,
        Some(_) => return Err(prop_err("properties", "expected an object")),
    };
    let id = feature_id(f).ok_or_else(|| prop_err("id", "missing (a string or a number)"))?;
    if id.is_empty() || id.len() > 128 {
        return Err(prop_err("id", "must be 1 to 128 characters"));
    }
    let text = |p: &str| -> Result<&str, FeatureError> {
        match props.get(p) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(prop_err(p, format!("expected a string, found {other}"))),
            None => Err(prop_err(p, "missing")),
        }
    };
    let int = |p: &str| -> Result<i64, FeatureError> {
        match props.get(p) {
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i64))
                .ok_or_else(|| prop_err(p, format!("expected a whole number, found {v}"))),
            None => Err(prop_err(p, "missing")),
        }
    };
    let date = |p: &str| -> Result<Option<NaiveDate>, FeatureError> {
        match props.get(p) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| prop_err(p, format!("{s:?} is not a date (YYYY-MM-DD)"))),
            Some(other) => Err(prop_err(
                p,
                format!("expected a date string, found {other}"),
            )),
        }
    };
    let district = DistrictId::parse(text("district")?.to_owned())
        .map_err(|e| prop_err("district", e.to_string()))?;
    let pressure_class = text("pressure_class")?.to_owned();
    if let Some(known) = classes
        && !known.contains(&pressure_class.as_str())
    {
        return Err(prop_err(
            "pressure_class",
            format!(
                "{pressure_class:?} is not a class of the obligation table in force; expected one of: {}",
                known.join(", ")
            ),
        ));
    }
    let material: Material = text("material")?
        .parse()
        .map_err(|e: String| prop_err("material", e))?;
    let diameter_mm = int("diameter_mm")?;
    if !(1..=5000).contains(&diameter_mm) {
        return Err(prop_err(
            "diameter_mm",
            format!("{diameter_mm} is not 1..5000"),
        ));
    }
    let year_laid = int("year_laid")?;
    if !(1800..=2200).contains(&year_laid) {
        return Err(prop_err("year_laid", format!("{year_laid} is not a year")));
    }
    let added_on = date("added_on")?
        .unwrap_or_else(|| NaiveDate::from_ymd_opt(year_laid as i32, 1, 1).expect("valid year"));
    let last_surveyed = date("last_surveyed")?;

    let geom = f
        .get("geometry")
        .ok_or_else(|| prop_err("geometry", "missing"))?;
    if geom.get("type").and_then(Value::as_str) != Some("LineString") {
        return Err(prop_err("geometry", "expected a LineString"));
    }
    let coords = geom
        .get("coordinates")
        .and_then(Value::as_array)
        .ok_or_else(|| prop_err("geometry", "a LineString needs `coordinates`"))?;
    if coords.len() < 2 {
        return Err(prop_err(
            "geometry",
            "a LineString needs at least two positions",
        ));
    }
    let geometry = coords
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let pair = c.as_array().filter(|a| a.len() >= 2);
            let lon = pair.and_then(|a| a[0].as_f64());
            let lat = pair.and_then(|a| a[1].as_f64());
            match (lon, lat) {
                (Some(lon), Some(lat)) => GeoPoint::new(lat, lon)
                    .map_err(|e| prop_err("geometry", format!("position {k}: {e}"))),
                _ => Err(prop_err(
                    "geometry",
                    format!("position {k} is not [lon, lat]"),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Imported {
        segment: Segment {
            id,
            district,
            geometry,
            pressure_class,
            material,
            diameter_mm: diameter_mm as u32,
            year_laid: year_laid as i32,
            added_on,
        },
        last_surveyed,
    })
}

/// The segments as a FeatureCollection; `last_surveyed` gives the property of that
/// name where known.
pub fn to_geojson(
    segments: &[Segment],
    last_surveyed: impl Fn(&str) -> Option<NaiveDate>,
) -> Value {
    let features: Vec<Value> = segments
        .iter()
        .map(|s| {
            let coords: Vec<Value> = s
                .geometry
                .iter()
                .map(|p| json!([round7(p.lon), round7(p.lat)]))
                .collect();
            let mut props = json!({
                "id": s.id,
                "district": s.district.as_str(),
                "pressure_class": s.pressure_class,
                "material": s.material.as_str(),
                "diameter_mm": s.diameter_mm,
                "year_laid": s.year_laid,
                "added_on": s.added_on.to_string(),
            });
            if let Some(d) = last_surveyed(&s.id) {
                props["last_surveyed"] = json!(d.to_string());
            }
            json!({
                "type": "Feature",
                "id": s.id,
                "geometry": {"type": "LineString", "coordinates": coords},
                "properties": props,
            })
        })
        .collect();
    json!({"type": "FeatureCollection", "features": features})
}

/// About 1 cm.
fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(id: &str) -> Value {
        json!({
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77], [11.251, 43.77]]},
            "properties": {
                "id": id, "district": "D01", "pressure_class": "it_bp",
                "material": "steel", "diameter_mm": 100, "year_laid": 1975,
                "last_surveyed": "2025-04-01"
            }
        })
    }

    fn fc(features: Vec<Value>) -> String {
        json!({"type": "FeatureCollection", "features": features}).to_string()
    }

    #[test]
    fn reads_a_collection_and_round_trips_through_export() {
        let got = parse(&fc(vec![good("S1"), good("S2")]), Some(&["it_bp"])).unwrap();
        assert_eq!(got.len(), 2);
        let s = &got[0].segment;
        assert_eq!(
            (s.id.as_str(), s.material, s.year_laid),
            ("S1", Material::Steel, 1975)
        );
        assert_eq!(s.added_on, NaiveDate::from_ymd_opt(1975, 1, 1).unwrap());
        assert!((s.length_m() - 80.4).abs() < 1.0, "{}", s.length_m());
        assert_eq!(got[0].last_surveyed, NaiveDate::from_ymd_opt(2025, 4, 1));
        let segs: Vec<Segment> = got.iter().map(|i| i.segment.clone()).collect();
        let back = to_geojson(&segs, |_| NaiveDate::from_ymd_opt(2025, 4, 1)).to_string();
        assert_eq!(parse(&back, None).unwrap(), got);
    }

    #[test]
    fn errors_name_the_feature_and_the_property() {
        let mut bad_material = good("S2");
        bad_material["properties"]["material"] = json!("lead");
        let mut no_district = good("S3");
        no_district["properties"]
            .as_object_mut()
            .unwrap()
            .remove("district");
        let mut point = good("S4");
        point["geometry"] = json!({"type": "Point", "coordinates": [11.0, 43.0]});
        let mut unknown_class = good("S5");
        unknown_class["properties"]["pressure_class"] = json!("it_xx");
        let text = fc(vec![
            good("S1"),
            bad_material,
            no_district,
            point,
            unknown_class,
            good("S1"),
        ]);
        let errs = parse(&text, Some(&["it_bp", "it_ap_mp"])).unwrap_err();
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 5, "{msgs:#?}");
        assert!(
            msgs[0].starts_with(
                "feature 1 (id \"S2\"): property `material`: unknown material \"lead\""
            ),
            "{}",
            msgs[0]
        );
        assert_eq!(
            msgs[1],
            "feature 2 (id \"S3\"): property `district`: missing"
        );
        assert!(
            msgs[2].contains("feature 3 (id \"S4\"): property `geometry`: expected a LineString")
        );
        assert!(
            msgs[3].contains("`pressure_class`: \"it_xx\" is not a class"),
            "{}",
            msgs[3]
        );
        assert!(msgs[4].contains("feature 5 (id \"S1\"): property `id`: the same id"));
        let not_fc = parse("{\"type\": \"Feature\"}", None).unwrap_err();
        assert!(
            not_fc[0]
                .to_string()
                .starts_with("the file: expected a GeoJSON FeatureCollection")
        );
    }
}

//! The OpenAPI 3.1 document of the REST API (`GET /api/v1/openapi.json`), made from
//! the router's own route list ([`crate::API_ROUTES`]) and the role table
//! ([`crate::authz::RULES`]), so it cannot drift from the routes: every path, method,
//! path parameter, the roles allowed (`x-roles`) and the two ways to authenticate.
//! Every POST route's request body is described by a JSON schema ([`request_body`],
//! `components.schemas`) with an example, and a test feeds each example (and the
//! example with an unknown field) to the very type the handler deserializes, so a
//! schema cannot promise a body the route refuses. Response bodies are described in
//! words (README).

use crate::API_ROUTES;
use crate::authz;
use axum::http::Method;
use serde_json::{Map, Value, json};

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (template, methods) in API_ROUTES {
        let params: Vec<Value> = template
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        let mut item = Map::new();
        for m in *methods {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap_or(Method::GET);
            let roles: Vec<&str> = authz::allowed(&method, template)
                .unwrap_or(&[])
                .iter()
                .map(|r| r.as_str())
                .collect();
            let op_id = format!(
                "{m}_{}",
                template
                    .trim_start_matches("/api/v1/")
                    .replace(['/', '-'], "_")
                    .replace(['{', '}'], "")
            );
            let mut op = json!({
                "operationId": op_id,
                "x-roles": roles,
                "parameters": params,
                "responses": {
                    "200": {"description": "OK (201 for what is created)"},
                    "401": {"$ref": "#/components/responses/Error"},
                    "403": {"$ref": "#/components/responses/Error"},
                    "404": {"$ref": "#/components/responses/Error"}
                }
            });
            if *m == "post"
                && let Some(name) = request_body(template)
            {
                op["requestBody"] = json!({
                    "required": true,
                    "content": {"application/json": {
                        "schema": {"$ref": format!("#/components/schemas/{name}")}
                    }}
                });
            }
            item.insert((*m).to_owned(), op);
        }
        paths.insert((*template).to_owned(), Value::Object(item));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "leakwatch", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::authn::SESSION_COOKIE}
            },
            "schemas": schemas(),
            "responses": {
                "Error": {
                    "description": "what is wrong",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["error"],
                        "properties": {"error": {"type": "string"}}
                    }}}
                }
            }
        }
    })
}

/// The schema (in `components.schemas`) of the body a POST route takes; `None` for
/// the routes that take none.
pub fn request_body(template: &str) -> Option<&'static str> {
    BODIES
        .iter()
        .find(|(t, _)| *t == template)
        .and_then(|(_, name)| *name)
}

/// (POST route, its body's schema): every POST route is listed (a test checks).
const BODIES: &[(&str, Option<&str>)] = &[
    ("/api/v1/meters", Some("MeterRecords")),
    ("/api/v1/alerts/{id}/acknowledge", None),
    ("/api/v1/alerts/{id}/dismiss", Some("Dismissal")),
    ("/api/v1/alerts/{id}/resolve", None),
    ("/api/v1/alerts/{id}/escalate", None),
    ("/api/v1/work-orders", Some("NewWorkOrder")),
    ("/api/v1/work-orders/{id}/transition", Some("Transition")),
    ("/api/v1/crews", Some("Crews")),
    ("/api/v1/crews/{id}/location", Some("PositionReport")),
    ("/api/v1/plans", Some("DayPlan")),
    ("/api/v1/survey/orders", Some("SurveyOrders")),
    ("/api/v1/survey/orders/{id}/report", Some("SurveyReport")),
    ("/api/v1/accounts", Some("NewAccount")),
    ("/api/v1/accounts/{name}/password", Some("NewPassword")),
    ("/api/v1/accounts/{name}/disable", None),
    ("/api/v1/accounts/{name}/enable", None),
    ("/api/v1/tokens", Some("NewToken")),
    ("/api/v1/tokens/{name}/revoke", None),
    ("/api/v1/suppressions/{id}/revoke", None),
];

/// An object with exactly these properties (`additionalProperties: false`, as the
/// handlers refuse unknown fields).
fn object(required: &[&str], properties: Value, example: Value) -> Value {
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": false,
        "example": example,
    })
}

fn string_enum(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn point() -> Value {
    json!({"$ref": "#/components/schemas/GeoPoint"})
}

/// The request bodies' schemas.
fn schemas() -> Value {
    use leakwatch_core::{Priority, Role, WorkOrderKind};
    let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    let kinds: Vec<&str> = [
        WorkOrderKind::Emergency,
        WorkOrderKind::LeakInvestigation,
        WorkOrderKind::Repair,
        WorkOrderKind::MeterCheck,
        WorkOrderKind::PlannedInspection,
    ]
    .iter()
    .map(|k| k.as_str())
    .collect();
    let priorities: Vec<&str> = [
        Priority::Emergency,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ]
    .iter()
    .map(|p| p.as_str())
    .collect();
    let meter = object(
        &["meter_id", "district_id", "kind", "lat", "lon"],
        json!({
            "meter_id": {"type": "string"},
            "district_id": {"type": "string"},
            "kind": string_enum(&["customer", "station", "pressure"]),
            "lat": {"type": "number"}, "lon": {"type": "number"},
            "report_every_h": {"type": ["integer", "null"], "minimum": 1, "description": "24 when absent"},
            "status": {"type": ["string", "null"], "enum": ["active", "inactive", null]},
            "installed_at": {"type": ["string", "null"], "format": "date-time"},
            "max_flow_m3h": {"type": ["number", "null"], "exclusiveMinimum": 0}
        }),
        json!({"meter_id": "M-1", "district_id": "D1", "kind": "customer", "lat": 45.46, "lon": 9.19}),
    );
    let crew = object(
        &["id", "name", "home"],
        json!({
            "id": {"type": "string"}, "name": {"type": "string"},
            "skills": {"type": "array", "items": {"type": "string"}},
            "home": point(), "position": point(),
            "position_at": {"type": "string", "format": "date-time"},
            "last_job_place": point(),
            "shifts": {"type": "object", "description": "weekly calendar: utc_offset_h, days (7 arrays of [start_minute, end_minute], Monday first), exceptions"},
            "on_shift": {"type": "boolean"}
        }),
        json!({"id": "C-1", "name": "North", "skills": ["emergency", "repair"],
               "home": {"lat": 45.46, "lon": 9.19}, "on_shift": true}),
    );
    let finding = object(
        &["leak_found"],
        json!({
            "leak_found": {"type": "boolean"},
            "leak_class": {"type": "string", "description": "a code of GET /api/v1/leak-classes; present iff a leak was found"},
            "gas_readings": {"type": "array", "items": object(
                &["percent_lel", "place"],
                json!({"percent_lel": {"type": "number"}, "place": {"type": "string"}}),
                json!({"percent_lel": 12.0, "place": "cellar"}))},
            "repaired": {"type": "boolean"},
            "notes": {"type": "string"}
        }),
        json!({"leak_found": true, "leak_class": "2", "gas_readings": [{"percent_lel": 12.0, "place": "cellar"}], "repaired": false}),
    );
    json!({
        "GeoPoint": object(&["lat", "lon"],
            json!({"lat": {"type": "number", "minimum": -90, "maximum": 90},
                   "lon": {"type": "number", "minimum": -180, "maximum": 180}}),
            json!({"lat": 45.46, "lon": 9.19})),
        "MeterRecords": {"type": "array", "minItems": 1, "items": meter,
            "example": [{"meter_id": "M-1", "district_id": "D1", "kind": "customer", "lat": 45.46, "lon": 9.19}]},
        "Dismissal": object(&["reason"],
            json!({"reason": {"type": "string"},
                   "suppress": {"type": ["object", "null"],
                        "description": "also keep this kind quiet on the alert's meter (or district) until a time, or until the evidence exceeds the dismissed one by the margin",
                        "properties": {"scope": {"type": ["string", "null"], "enum": ["meter", "district", null]},
                                       "until": {"type": ["string", "null"], "format": "date-time"},
                                       "margin": {"type": ["number", "null"], "exclusiveMinimum": 0}},
                        "additionalProperties": false}}),
            json!({"reason": "the customer's boiler was being serviced",
                   "suppress": {"scope": "meter", "until": "2026-12-31T00:00:00Z", "margin": 0.25}})),
        "NewWorkOrder": object(&["kind", "priority", "location", "summary"],
            json!({"kind": string_enum(&kinds), "priority": string_enum(&priorities),
                   "location": point(), "summary": {"type": "string"},
                   "meter_id": {"type": ["string", "null"]},
                   "due_at": {"type": ["string", "null"], "format": "date-time"},
                   "parent_id": {"type": ["integer", "null"]}}),
            json!({"kind": "planned_inspection", "priority": "normal",
                   "location": {"lat": 45.46, "lon": 9.19}, "summary": "check the regulator"})),
        "Transition": {
            "type": "object", "required": ["action"],
            "description": "one action; `position` (where the crew is) may go with any",
            "oneOf": [
                object(&["action", "crew_id"], json!({"action": {"const": "assign"}, "crew_id": {"type": "string"}, "position": point()}), json!({"action": "assign", "crew_id": "C-1"})),
                object(&["action"], json!({"action": {"enum": ["unassign", "accept", "start_travel", "arrive"]}, "position": point()}), json!({"action": "arrive"})),
                object(&["action"], json!({"action": {"const": "complete"}, "notes": {"type": ["string", "null"]}, "finding": finding, "position": point()}), json!({"action": "complete", "finding": {"leak_found": false}})),
                object(&["action", "reason"], json!({"action": {"enum": ["cancel", "unable_to_complete"]}, "reason": {"type": "string"}, "position": point()}), json!({"action": "cancel", "reason": "duplicate"}))
            ],
            "example": {"action": "arrive", "position": {"lat": 45.46, "lon": 9.19}}
        },
        "Crews": {"type": "array", "minItems": 1, "items": crew,
            "example": [{"id": "C-1", "name": "North", "home": {"lat": 45.46, "lon": 9.19}, "on_shift": true}]},
        "PositionReport": object(&["lat", "lon"],
            json!({"lat": {"type": "number"}, "lon": {"type": "number"},
                   "t": {"type": "string", "format": "date-time", "description": "when the fix was taken; arrival time when absent"}}),
            json!({"lat": 45.46, "lon": 9.19, "t": "2026-12-03T10:00:00Z"})),
        "DayPlan": object(&["date"],
            json!({"date": {"type": "string", "format": "date"}, "apply": {"type": "boolean", "default": false}}),
            json!({"date": "2026-12-03", "apply": true})),
        "SurveyOrders": object(&[], json!({"date": {"type": "string", "format": "date"}}),
            json!({"date": "2026-12-03"})),
        "SurveyReport": object(&["date", "segments"],
            json!({"date": {"type": "string", "format": "date"},
                   "crew_id": {"type": ["string", "null"]}, "instrument": {"type": ["string", "null"]},
                   "segments": {"type": "array", "items": object(&["id"],
                        json!({"id": {"type": "string"}, "covered_m": {"type": ["number", "null"]}}),
                        json!({"id": "S-1"}))},
                   "leaks": {"type": "array", "items": object(&["segment", "class"],
                        json!({"segment": {"type": "string"}, "class": {"type": "string"}, "notes": {"type": "string"}}),
                        json!({"segment": "S-1", "class": "2"}))}}),
            json!({"date": "2026-12-03", "segments": [{"id": "S-1", "covered_m": 120.0}],
                   "leaks": [{"segment": "S-1", "class": "2", "notes": "by the valve"}]})),
        "NewAccount": object(&["name", "role", "password"],
            json!({"name": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"},
                   "role": string_enum(&roles),
                   "crew": {"type": ["string", "null"], "description": "required with role crew, refused otherwise"},
                   "password": {"type": "string", "minLength": 10, "maxLength": 1024}}),
            json!({"name": "eva", "role": "engineer", "password": "a long enough password"})),
        "NewPassword": object(&["password"],
            json!({"password": {"type": "string", "minLength": 10, "maxLength": 1024}}),
            json!({"password": "another long password"})),
        "NewToken": object(&["name", "role"],
            json!({"name": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"},
                   "role": string_enum(&roles),
                   "crew": {"type": ["string", "null"], "description": "required with role crew, refused otherwise"}}),
            json!({"name": "phone-c1", "role": "crew", "crew": "C-1"}))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every POST route is in [`BODIES`]; each schema's example is a body its route's
    /// own type takes, and the example with an unknown field one it refuses.
    #[test]
    fn body_schemas_describe_what_the_routes_take() {
        for (template, methods) in API_ROUTES {
            if methods.contains(&"post") {
                assert!(
                    BODIES.iter().any(|(t, _)| t == template),
                    "POST {template} is not in BODIES"
                );
            }
        }
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        fn takes<T: serde::de::DeserializeOwned>(v: &Value) -> bool {
            serde_json::from_value::<T>(v.clone()).is_ok()
        }
        type Check = fn(&Value) -> bool;
        let checks: &[(&str, Check)] = &[
            ("MeterRecords", takes::<Vec<leakwatch_core::MeterRecord>>),
            ("Dismissal", takes::<crate::routes::Reason>),
            ("NewWorkOrder", takes::<crate::routes::NewOrderBody>),
            ("Transition", takes::<crate::routes::TransitionBody>),
            ("Crews", takes::<Vec<leakwatch_core::Crew>>),
            ("PositionReport", takes::<leakwatch_core::PositionReport>),
            ("DayPlan", takes::<crate::routes::PlanBody>),
            ("SurveyOrders", takes::<crate::survey::PlanOrders>),
            ("SurveyReport", takes::<crate::survey::SurveyReport>),
            ("NewAccount", takes::<crate::accounts::NewAccountBody>),
            ("NewPassword", takes::<crate::accounts::PasswordBody>),
            ("NewToken", takes::<crate::accounts::NewTokenBody>),
        ];
        for (_, name) in BODIES {
            if let Some(name) = name {
                assert!(
                    checks.iter().any(|(n, _)| n == name),
                    "{name} is not checked"
                );
            }
        }
        for (name, check) in checks {
            let schema = &schemas[*name];
            let example = &schema["example"];
            assert!(check(example), "{name}: its example is refused: {example}");
            // An unknown field is refused (on the object, or the array's first item).
            let mut extra = example.clone();
            match &mut extra {
                Value::Array(items) => {
                    items[0]["surprise"] = json!(1);
                }
                v => v["surprise"] = json!(1),
            }
            assert!(!check(&extra), "{name}: an unknown field is taken");
            // Each required property is needed.
            let object = if schema["type"] == "array" {
                &schema["items"]
            } else {
                schema
            };
            for req in object["required"].as_array().into_iter().flatten() {
                let mut missing = example.clone();
                let target = match &mut missing {
                    Value::Array(items) => &mut items[0],
                    v => v,
                };
                target
                    .as_object_mut()
                    .unwrap()
                    .remove(req.as_str().unwrap());
                assert!(!check(&missing), "{name}: {req} is required but not needed");
            }
        }
        // Each route with a body refers to its schema.
        let op = &doc["paths"]["/api/v1/accounts"]["post"];
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/NewAccount"
        );
        assert!(
            doc["paths"]["/api/v1/alerts/{id}/acknowledge"]["post"]
                .get("requestBody")
                .is_none()
        );
    }

    /// The document lists exactly the router's routes and methods, each with the roles
    /// of its rule.
    #[test]
    fn the_document_matches_the_routes() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), API_ROUTES.len());
        for (template, methods) in API_ROUTES {
            let item = paths[*template].as_object().unwrap();
            let mut listed: Vec<&str> = item.keys().map(String::as_str).collect();
            let mut expected: Vec<&str> = methods.to_vec();
            listed.sort_unstable();
            expected.sort_unstable();
            assert_eq!(listed, expected, "{template}");
            for (m, op) in item {
                assert!(
                    !op["x-roles"].as_array().unwrap().is_empty(),
                    "{m} {template}"
                );
                let n = template.matches('{').count();
                assert_eq!(op["parameters"].as_array().unwrap().len(), n, "{template}");
            }
        }
        assert!(paths.contains_key("/api/v1/openapi.json"));
    }
}

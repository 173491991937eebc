//! The OpenAPI 3.1 document of the REST API (`GET /api/v1/openapi.json`), made from
//! the router's own route list ([`crate::API_ROUTES`]) and the role table
//! ([`crate::authz::RULES`]), so it cannot drift from the routes: every path, method,
//! path parameter, the roles allowed (`x-roles`) and the two ways to authenticate.
//! Request and response bodies are described in words (README), not yet as schemas.

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
            if *m == "post" {
                op["requestBody"] = json!({"content": {"application/json": {"schema": {}}}});
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! `/openapi.json`: the gateway's API as OpenAPI 3.1.

use serde_json::{Value, json};

/// The OpenAPI document of the gateway.
pub fn document() -> Value {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let problem_response = |description: &str| {
        json!({"description": description,
               "content": {"application/problem+json": {"schema": problem}}})
    };
    let retry_after = json!({"Retry-After": {"schema": {"type": "integer"},
        "description": "seconds to wait before retrying the whole request"}});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Herald HTTP gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "CloudEvents (binary, structured, batch) and Inngest-compatible \
                event ingest into a Herald namespace. Every event of a request is validated \
                against the schema registry before any is stored."
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "access_token": {"type": "apiKey", "in": "query", "name": "access_token"}
            },
            "schemas": {
                "Accepted": {"type": "object", "required": ["id", "type", "seq", "duplicate"],
                    "properties": {"id": {"type": "string"}, "type": {"type": "string"},
                        "seq": {"type": "integer"}, "duplicate": {"type": "boolean"},
                        "dataschema": {"type": "string"}}},
                "Problem": {"type": "object", "required": ["type", "status", "title"],
                    "properties": {"type": {"type": "string"}, "status": {"type": "integer"},
                        "title": {"type": "string"}, "detail": {"type": "string"},
                        "index": {"type": "integer"},
                        "errors": {"type": "array", "items": {"type": "object", "properties": {
                            "index": {"type": "integer"}, "id": {"type": "string"},
                            "type": {"type": "string"}, "schema": {"type": "string"},
                            "violations": {"type": "array", "items": {"type": "object",
                                "properties": {"path": {"type": "string"},
                                    "message": {"type": "string"}}}}}}},
                        "accepted": {"type": "array",
                            "items": {"$ref": "#/components/schemas/Accepted"}}}},
                "CloudEvent": {"type": "object",
                    "required": ["specversion", "id", "type", "source"],
                    "properties": {"specversion": {"const": "1.0"}, "id": {"type": "string"},
                        "type": {"type": "string"}, "source": {"type": "string"},
                        "time": {"type": "string"}, "subject": {"type": "string"},
                        "dataschema": {"type": "string"}, "datacontenttype": {"type": "string"},
                        "data": {}}},
                "InngestEvent": {"type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string"}, "data": {"type": "object"},
                        "id": {"type": "string"}, "ts": {"type": "integer"},
                        "user": {"type": "object"}, "v": {"type": "string"}}}
            }
        },
        "security": [{"bearer": []}, {"access_token": []}],
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Send CloudEvents (binary mode with ce-* headers, structured, or batch)",
                    "requestBody": {"required": true, "content": {
                        "application/json": {"schema": {}},
                        "application/cloudevents+json":
                            {"schema": {"$ref": "#/components/schemas/CloudEvent"}},
                        "application/cloudevents-batch+json": {"schema": {"type": "array",
                            "items": {"$ref": "#/components/schemas/CloudEvent"}}}}},
                    "responses": {
                        "202": {"description": "every event stored (duplicates marked)",
                            "content": {"application/json": {"schema": {"type": "object",
                                "properties": {"accepted": {"type": "array",
                                    "items": {"$ref": "#/components/schemas/Accepted"}}}}}}},
                        "400": problem_response("an event is invalid; none was stored"),
                        "401": problem_response("missing, invalid or revoked key"),
                        "403": problem_response("an event type outside the key's scopes"),
                        "413": problem_response("body, batch or event too large"),
                        "415": problem_response("unsupported media type"),
                        "429": {"description": "the key's rate is exceeded",
                            "headers": retry_after,
                            "content": {"application/problem+json": {"schema": problem}}},
                        "503": {"description": "NATS unavailable; what was stored is listed",
                            "headers": retry_after,
                            "content": {"application/problem+json": {"schema": problem}}}
                    }
                },
                "options": {
                    "summary": "CloudEvents webhook abuse-protection handshake",
                    "security": [],
                    "parameters": [{"name": "WebHook-Request-Origin", "in": "header",
                        "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "allowed origin and rate"}}
                }
            },
            "/e/{key}": {
                "post": {
                    "summary": "Inngest-compatible event API: one event or an array",
                    "security": [],
                    "parameters": [{"name": "key", "in": "path", "required": true,
                        "schema": {"type": "string"}}],
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": {"oneOf": [
                            {"$ref": "#/components/schemas/InngestEvent"},
                            {"type": "array",
                                "items": {"$ref": "#/components/schemas/InngestEvent"}}]}}}},
                    "responses": {
                        "200": {"description": "stored: {ids, status}"},
                        "400": {"description": "invalid: {ids: [], status, error}"},
                        "401": {"description": "invalid or revoked key"},
                        "429": {"description": "rate limited", "headers": retry_after},
                        "503": {"description": "NATS unavailable", "headers": retry_after}
                    }
                }
            },
            "/healthz": {"get": {"summary": "the process is alive", "security": [],
                "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "connected to NATS and watching keys",
                "security": [],
                "responses": {"200": {"description": "ready"},
                    "503": {"description": "not ready", "headers": retry_after}}}},
            "/openapi.json": {"get": {"summary": "this document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        }
    })
}

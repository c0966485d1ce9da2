//! Unknown fields, as the real API server treats them (built-in kinds, from the 1.36
//! schemas of [`super::schema`]).
//!
//! - Server-side apply: the patch is converted to a typed object against the schema, and
//!   a field the schema does not declare fails the request whatever `fieldValidation`
//!   says: `failed to create typed patch object (<ns>/<name>; <group>/<version>,
//!   Kind=<Kind>): .spec.foo: field not declared in schema`, answered as a 500 because the
//!   error is not a Status (k8s.io/apimachinery pkg/util/managedfields/internal/
//!   structuredmerge.go `Apply`; kubernetes#122480, kubernetes#139253 for the 500).
//!   `fieldValidation=Strict` on apply adds only the duplicate-field check
//!   (k8s.io/apiserver pkg/endpoints/handlers/patch.go `applyPatcher`).
//! - Create and update (POST, PUT): `fieldValidation` defaults to `Warn`
//!   (handlers/rest.go `fieldValidation`): an unknown field is dropped and reported in a
//!   `Warning: 299 - "unknown field \"spec.foo\""` header (handlers/create.go,
//!   update.go `addStrictDecodingWarnings`); `Ignore` drops it silently; `Strict` refuses
//!   the request: 400 BadRequest `strict decoding error: unknown field "spec.foo"`.
//!
//! Not reproduced: custom resources (their CRD schemas are not consulted), duplicate
//! fields, merge and strategic-merge patches (not checked).

use serde_json::{Value, json};

use super::schema::{Schemas, decoder_path, drop_field, smd_path};
use super::{Request, Res, Response, bad_request, fail};

/// A server-side apply of `obj`: an error when the schema does not declare a field.
pub(super) fn check_apply(r: &Res, obj: &Value) -> Result<(), Response> {
    let schemas = Schemas::get();
    let unknown = schemas.unknown_fields(&r.group, &r.version, &r.kind, obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let errors: Vec<String> = unknown
        .iter()
        .map(|p| format!("{}: field not declared in schema", smd_path(p)))
        .collect();
    let what = if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("errors:\n  {}", errors.join("\n  "))
    };
    let message = format!(
        "failed to create typed patch object ({ns}/{name}; {}/{}, Kind={}): {what}",
        r.group, r.version, r.kind
    );
    // A plain error, not a Status: code 500 with no reason (responsewriters ErrorToAPIStatus).
    Err(fail(500, "", &message, json!({})))
}

/// A create or update of `obj`: unknown fields are dropped (and their warnings
/// returned), or the request is refused under `fieldValidation=Strict`.
pub(super) fn check_write(
    r: &Res,
    obj: &mut Value,
    req: &Request,
) -> Result<Vec<String>, Response> {
    let schemas = Schemas::get();
    let unknown = schemas.unknown_fields(&r.group, &r.version, &r.kind, obj);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{}\"", decoder_path(p)))
        .collect();
    match req.q("fieldValidation").unwrap_or("Warn") {
        "Strict" => Err(bad_request(&format!(
            "strict decoding error: {}",
            texts.join(", ")
        ))),
        directive => {
            for p in &unknown {
                drop_field(obj, p);
            }
            Ok(if directive == "Ignore" {
                Vec::new()
            } else {
                texts
            })
        }
    }
}

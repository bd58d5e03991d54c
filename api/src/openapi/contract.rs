//! Declares the answers every operation can give but that handlers do not list one by one,
//! derived from the operation's shape, so the document stays exact as routes are added:
//!
//! - a request body: 400 (malformed JSON), 413 (too large), 415 (not JSON), 422 (invalid);
//! - query parameters: 422; path parameters: 404 (an id that does not parse names nothing);
//! - a bearer requirement: 401 with `WWW-Authenticate`;
//! - everything but the probes: 503 with `Retry-After` (database down, load shed, timeout).
//!
//! Every 429 and 503 also declares `Retry-After`.

use utoipa::openapi::{
    Content, OpenApi, Ref, RefOr,
    header::HeaderBuilder,
    path::{Operation, ParameterIn},
    response::{Response, ResponseBuilder},
    schema::{ObjectBuilder, Type},
};

pub struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let probe = path.starts_with("/health");
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                complete(operation, probe);
            }
        }
    }
}

fn complete(operation: &mut Operation, probe: bool) {
    let has_in = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|parameter| match parameter {
                RefOr::T(parameter) => parameter.parameter_in == place,
                RefOr::Ref(_) => false,
            })
    };
    let mut derived: Vec<(&str, &str)> = Vec::new();
    if operation.request_body.is_some() {
        derived.extend([
            ("400", "The body is not valid JSON"),
            ("413", "The body is larger than the server accepts"),
            (
                "415",
                "The body is not JSON (`Content-Type: application/json`)",
            ),
            ("422", "Invalid input; `errors` names each field"),
        ]);
    }
    if has_in(ParameterIn::Query) || has_in(ParameterIn::Header) {
        derived.push(("422", "A query parameter or header is invalid"));
    }
    if has_in(ParameterIn::Path) {
        derived.push(("404", "Not found"));
    }
    if operation.security.is_some() {
        derived.push(("401", "Missing, invalid or revoked bearer token"));
    }
    if !probe {
        derived.push((
            "503",
            "Temporarily unavailable (database down, server at capacity or request too slow); see Retry-After",
        ));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in derived {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(problem(description)));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let header = match status.as_str() {
            "401" => Some(("WWW-Authenticate", Type::String, "The bearer scheme to use")),
            "429" | "503" => Some((
                "Retry-After",
                Type::Integer,
                "Seconds to wait before retrying",
            )),
            _ => None,
        };
        if let Some((name, kind, description)) = header {
            response.headers.entry(name.to_owned()).or_insert_with(|| {
                RefOr::T(
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(kind)))
                        .description(Some(description))
                        .build(),
                )
            });
        }
    }
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .build()
}

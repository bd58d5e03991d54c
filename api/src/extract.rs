//! Extractors that turn every malformed request into our problem+json shape:
//! JSON bodies (with field paths for type errors and unknown fields), queries and paths.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request, rejection::BytesRejection},
    http::{StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body. Wrong content type → 415, bad syntax → 400, wrong shape → 422 naming the field.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_content_type(request.headers(), "application/json") {
            return Err(ApiError::UnsupportedMediaType(
                "Send the body as JSON with `Content-Type: application/json`.",
            ));
        }
        let body = read_body(request, state).await?;
        parse_json(&body).map(AppJson)
    }
}

/// Whether the request's content type is `expected` (parameters such as charset ignored).
pub fn has_content_type(headers: &axum::http::HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case(expected)
                || (expected == "application/json"
                    && mime.to_ascii_lowercase().ends_with("+json")
                    && mime.to_ascii_lowercase().starts_with("application/"))
        })
}

/// Reads the whole body, mapping the size limit to 413.
pub async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("The request body could not be read.".to_owned())
            }
        })
}

/// Deserializes JSON, reporting the path of the first field that does not fit.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        if error.inner().is_syntax() || error.inner().is_eof() {
            malformed(error.inner())
        } else {
            invalid_shape(&error)
        }
    })?;
    deserializer.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

/// Deserializes an already-parsed JSON value into its typed form.
pub fn parse_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| invalid_shape(&error))
}

fn invalid_shape(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let field = if path == "." { String::new() } else { path };
    ApiError::Validation(vec![FieldError::new(
        field,
        strip_position(&error.inner().to_string()),
    )])
}

fn malformed(error: &serde_json::Error) -> ApiError {
    ApiError::BadRequest(format!("The body is not valid JSON: {error}"))
}

/// serde_json appends " at line 1 column 42"; clients need the field, not the offset.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters; a bad one → 422 naming it.
pub struct AppQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| AppQuery(value))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}

/// Path parameters; one that does not parse (a malformed id) names nothing that exists → 404.
pub struct AppPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| AppPath(value))
            .map_err(|_| ApiError::NotFound("No such resource."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        quantity: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Line>,
    }

    fn error_of(body: &str) -> ApiError {
        parse_json::<Body>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_type_error_names_the_nested_field() {
        match error_of(r#"{"items":[{"quantity":1},{"quantity":"x"}]}"#) {
            ApiError::Validation(errors) => assert_eq!(errors[0].field, "items[1].quantity"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_unknown_field_is_invalid_input() {
        match error_of(r#"{"items":[],"role":"admin"}"#) {
            ApiError::Validation(errors) => assert!(errors[0].message.contains("role")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn broken_json_is_a_bad_request() {
        assert!(matches!(error_of(r#"{"items":"#), ApiError::BadRequest(_)));
        assert!(matches!(
            error_of(r#"{"items":[]} trailing"#),
            ApiError::BadRequest(_)
        ));
    }
}

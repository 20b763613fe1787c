//! CORS for browser clients: off unless origins are configured (`--cors-allow-origin`).
//!
//! With origins configured, tower-http's `CorsLayer` answers every `OPTIONS` request as a
//! preflight (an allowed origin gets `access-control-allow-origin` and the methods and headers the
//! API uses; any other origin gets no allow-origin, which a browser treats as a refusal) and adds
//! the allow-origin and exposed headers to the responses to allowed origins. Tokens travel in the
//! `Authorization` header, never in cookies, so credentials are not allowed. Without origins no
//! layer is installed, and an `OPTIONS` request is a 405 like any other unserved method.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method, Uri};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any origin.
    Any,
    /// These exact origins (`scheme://host[:port]`), compared byte for byte with `Origin`.
    List(Vec<HeaderValue>),
}

/// How long a browser may cache a preflight's answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The request headers the API reads.
const ALLOWED_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("x-request-id"),
];

/// The response headers a browser client may read: the request id, when to retry after a 429, and
/// whether an error is worth retrying (Metronome's SDKs read it).
const EXPOSED_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-request-id"),
    header::RETRY_AFTER,
    HeaderName::from_static("x-should-retry"),
];

impl AllowedOrigins {
    /// Reads the configured origins: none is `None` (CORS off), `*` alone is any origin, and
    /// every other value must be an origin (`https://app.example.com`, `http://localhost:3000`:
    /// a scheme and a host, no path, no trailing slash), since nothing else ever equals a
    /// browser's `Origin` header.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Option<AllowedOrigins>, String> {
        let values: Vec<&str> = values
            .iter()
            .map(|v| v.as_ref().trim())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Ok(None);
        }
        if values.contains(&"*") {
            return match values.len() {
                1 => Ok(Some(AllowedOrigins::Any)),
                _ => Err("CORS origin `*` allows every origin: give it alone".to_string()),
            };
        }
        values
            .iter()
            .map(|v| parse_origin(v))
            .collect::<Result<Vec<_>, _>>()
            .map(|list| Some(AllowedOrigins::List(list)))
    }
}

fn parse_origin(value: &str) -> Result<HeaderValue, String> {
    let bad = |why: &str| {
        Err(format!(
            "CORS origin {value:?} is not an origin ({why}); expected scheme://host[:port], e.g. https://app.example.com"
        ))
    };
    let Ok(uri) = value.parse::<Uri>() else {
        return bad("not a URL");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return bad("the scheme must be http or https");
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return bad("no host");
    }
    let scheme_and_authority = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or_default(),
        uri.authority().map_or("", |a| a.as_str())
    );
    if scheme_and_authority != value || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return bad("an origin has no path, query, trailing slash or user");
    }
    HeaderValue::from_str(value).or_else(|_| bad("not a valid header value"))
}

/// The layer for `origins`.
pub fn layer(origins: &AllowedOrigins) -> CorsLayer {
    let allow_origin = match origins {
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(ALLOWED_HEADERS)
        .expose_headers(EXPOSED_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origins() {
        assert_eq!(AllowedOrigins::parse::<&str>(&[]), Ok(None));
        assert_eq!(AllowedOrigins::parse(&["", " "]), Ok(None));
        assert_eq!(AllowedOrigins::parse(&["*"]), Ok(Some(AllowedOrigins::Any)));
        assert_eq!(
            AllowedOrigins::parse(&["https://app.example.com", "http://localhost:3000"]),
            Ok(Some(AllowedOrigins::List(vec![
                HeaderValue::from_static("https://app.example.com"),
                HeaderValue::from_static("http://localhost:3000"),
            ])))
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?q",
            "ftp://app.example.com",
            "https://user@app.example.com",
            "null",
        ] {
            assert!(AllowedOrigins::parse(&[bad]).is_err(), "{bad} was accepted");
        }
        assert!(AllowedOrigins::parse(&["*", "https://a.example"]).is_err());
    }
}

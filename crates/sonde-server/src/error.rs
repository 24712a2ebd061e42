//! Whole-request errors and how they become HTTP responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sonde_store::StoreError;

/// Failures outside request handling (startup, files).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// File system error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// JSON error in a project file.
    #[error("project file: {0}")]
    Json(#[from] serde_json::Error),
    /// `init` on a directory that already has a project.
    #[error("{0} already holds a Sonde project")]
    AlreadyInitialized(std::path::PathBuf),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Binding or serving failed.
    #[error("server: {0}")]
    Serve(std::io::Error),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
}

/// An error answering a whole request. Its body is
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Seconds the client should wait before retrying, when retrying helps.
    pub fn retry_after_secs(&self) -> Option<u32> {
        self.retry_after
    }

    /// Ask the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 500: something failed on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "the collector is at capacity; retry the same batch later",
            )
            .retry_after(1),
            StoreError::Unavailable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!(
                    "storage cannot write ({m}); nothing of this batch was stored, retry later"
                ),
            )
            .retry_after(5),
            StoreError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down; retry against another instance or later",
            )
            .retry_after(5),
            StoreError::Query(m) => {
                let read_only = m.contains("not supported") || m.contains("Statement");
                if read_only {
                    ApiError::bad_request(
                        "read_only",
                        format!(
                            "only read-only queries are allowed (SELECT, WITH, EXPLAIN, SHOW): {m}"
                        ),
                    )
                } else {
                    ApiError::bad_request("invalid_query", m)
                }
            }
            StoreError::QueryTimeout(d) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "query_timeout",
                format!(
                    "the query ran longer than {} s; narrow it or add filters",
                    d.as_secs_f64()
                ),
            ),
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

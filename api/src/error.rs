//! [`ApiError`]: every failure a request can meet, mapped exhaustively to AgentCore's
//! error names and HTTP statuses. rest-json clients (boto3, the AWS SDKs) read the name
//! from the `x-amzn-ErrorType` header and the text from the body's `message`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input or a broken limit (400).
    #[error("{0}")]
    Validation(String),
    /// The body is larger than the server accepts (413, still a ValidationException).
    #[error("{0}")]
    TooLarge(String),
    /// Unknown memory, event … (404).
    #[error("{0}")]
    NotFound(String),
    /// Unknown route (404).
    #[error("{0}")]
    UnknownOperation(String),
    /// Conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// Too many requests queued (429).
    #[error("{0}")]
    Throttled(String),
    /// Our fault (500). The message names what failed, never a secret.
    #[error("{0}")]
    Service(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) | ApiError::TooLarge(_) => "ValidationException",
            ApiError::NotFound(_) => "ResourceNotFoundException",
            ApiError::UnknownOperation(_) => "UnknownOperationException",
            ApiError::Conflict(_) => "ConflictException",
            ApiError::Throttled(_) => "ThrottledException",
            ApiError::Service(_) => "ServiceException",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) | ApiError::UnknownOperation(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Service(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn validation(msg: impl Into<String>) -> ApiError {
        ApiError::Validation(msg.into())
    }
}

impl From<memlog_engine::Error> for ApiError {
    fn from(e: memlog_engine::Error) -> ApiError {
        use memlog_engine::Error as E;
        match e {
            E::Invalid(m) => ApiError::Validation(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::Overloaded(m) => ApiError::Throttled(m),
            // Storage, Corruption, Closed, Embed, and whatever internal fault comes next.
            e => {
                tracing::error!("request failed inside the engine: {e}");
                ApiError::Service(format!("internal error: {e}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let message = self.to_string();
        let body = json!({
            "message": message,
            "error": {"code": code, "message": message},
        });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        resp.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(code));
        if matches!(self, ApiError::TooLarge(_)) {
            // The rest of the body is never read, so hyper drops the connection after
            // this answer; say so, or a client reuses it and its next request fails.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

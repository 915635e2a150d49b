//! The messages of waSCC's HTTP server capability (`wascc:http_server`), as
//! wascc-codec 0.6 encodes them: MessagePack maps keyed by field name.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::HashMap;

pub const CAPABILITY: &str = "wascc:http_server";
pub const OP_HANDLE_REQUEST: &str = "HandleRequest";
pub const OP_HEALTH_REQUEST: &str = "HealthRequest";

#[derive(Debug, Deserialize)]
pub struct Request {
    pub method: String,
    pub path: String,
    #[serde(rename = "queryString")]
    pub query_string: String,
    pub header: HashMap<String, String>,
    pub body: ByteBuf,
}

#[derive(Debug, Serialize)]
pub struct Response {
    #[serde(rename = "statusCode")]
    pub status_code: u32,
    pub status: String,
    pub header: HashMap<String, String>,
    pub body: ByteBuf,
}

/// wascc-codec's core HealthRequest; its only field is a placeholder.
#[derive(Debug, Deserialize)]
pub struct HealthRequest {
    #[serde(default)]
    pub placeholder: bool,
}

#[derive(Debug, Serialize)]
pub struct HealthResponse {
    pub healthy: bool,
    pub message: String,
}

impl Response {
    /// A JSON response: `body` is any serializable value.
    pub fn json<T: Serialize>(status_code: u32, body: &T) -> Response {
        // Serializing strings, numbers and lists of them cannot fail.
        let body = serde_json::to_vec(body).unwrap_or_default();
        let mut header = HashMap::new();
        header.insert("Content-Type".to_string(), "application/json".to_string());
        Response { status_code, status: reason(status_code).to_string(), header, body: ByteBuf::from(body) }
    }

    /// `{"error": message}`
    pub fn error(status_code: u32, message: &str) -> Response {
        let mut body = HashMap::new();
        body.insert("error", message);
        Response::json(status_code, &body)
    }
}

fn reason(status_code: u32) -> &'static str {
    match status_code {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "",
    }
}

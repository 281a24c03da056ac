//! WebSocket APIs (contract §5.3): the document's `protocol`,
//! `route_selection` and `websocket` limits, and choosing a route for a
//! message. Below `docs` (it imports nothing of it), so both the
//! validation there and the data plane's sessions use one definition.

use serde::{Deserialize, Serialize};

use crate::validate::{Result, ValidationError};

/// The route key the upgrade runs (a non-2xx answer refuses it).
pub const CONNECT: &str = "$connect";
/// The route key run once the connection has closed, either side first.
pub const DISCONNECT: &str = "$disconnect";
/// The route key of messages that name no route (and of binary ones).
pub const DEFAULT: &str = "$default";

/// What an API serves: HTTP requests, or WebSocket connections whose
/// messages are routed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Websocket,
}

/// `GET /v1/connections/{id}`: what the gateway knows of a connection.
/// Here, not in the data plane, so the admin API's document describes the
/// very type the data plane sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConnectionInfo {
    pub id: String,
    pub api: String,
    /// RFC 3339, UTC.
    pub connected_at: String,
    pub last_active_at: String,
    pub source_ip: String,
    pub key_id: Option<String>,
    pub tenant: Option<String>,
    pub subject: Option<String>,
}

/// Limits of a WebSocket API's connections; the defaults are AWS's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    /// A connection with no message either way for this long is closed (1001).
    #[serde(default = "WebSocketSettings::default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// A connection is closed (1001) this long after it opened.
    #[serde(default = "WebSocketSettings::default_max_duration_s")]
    pub max_duration_s: u64,
    /// A bigger message closes the connection with 1009.
    #[serde(default = "WebSocketSettings::default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// A bigger frame closes the connection with 1009.
    #[serde(default = "WebSocketSettings::default_max_frame_bytes")]
    pub max_frame_bytes: u64,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            idle_timeout_s: Self::default_idle_timeout_s(),
            max_duration_s: Self::default_max_duration_s(),
            max_message_bytes: Self::default_max_message_bytes(),
            max_frame_bytes: Self::default_max_frame_bytes(),
        }
    }
}

impl WebSocketSettings {
    fn default_idle_timeout_s() -> u64 {
        600
    }
    fn default_max_duration_s() -> u64 {
        7200
    }
    fn default_max_message_bytes() -> u64 {
        128 * 1024
    }
    fn default_max_frame_bytes() -> u64 {
        32 * 1024
    }

    pub fn validate(&self) -> Result {
        let day = 86_400;
        let ranges = [
            ("idle_timeout_s", self.idle_timeout_s, 1, day),
            ("max_duration_s", self.max_duration_s, 1, day),
            ("max_message_bytes", self.max_message_bytes, 1, 16 << 20),
            ("max_frame_bytes", self.max_frame_bytes, 1, 16 << 20),
        ];
        for (field, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(ValidationError::new(field, format!("must be {lo} to {hi}")));
            }
        }
        if self.max_frame_bytes > self.max_message_bytes {
            return Err(ValidationError::new(
                "max_frame_bytes",
                "must not exceed max_message_bytes",
            ));
        }
        Ok(())
    }
}

/// The route selection expression in force when a document names none.
pub const DEFAULT_ROUTE_SELECTION: &str = "$request.body.action";

/// `$request.body.a.b` → the field path `["a", "b"]` of each JSON message.
pub fn selection_path(field: &str, expression: &str) -> Result<Vec<String>> {
    let path = expression.strip_prefix("$request.body.").ok_or_else(|| {
        ValidationError::new(
            field,
            format!("{expression:?} must be $request.body.FIELD (a field of each JSON message)"),
        )
    })?;
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(ValidationError::new(
            field,
            format!("{expression:?} has an empty field name"),
        ));
    }
    Ok(parts)
}

/// The route key a text message selects: the string at `path` in the
/// message's JSON, if the message is a JSON object that has one.
pub fn selected_key<'a>(path: &[String], message: &'a serde_json::Value) -> Option<&'a str> {
    path.iter()
        .try_fold(message, |v, name| v.get(name))?
        .as_str()
}

/// A route key: `$connect`, `$disconnect`, `$default`, or a name that
/// does not start with `$` (1 to 128 characters).
pub fn validate_route_key(field: &str, key: &str) -> Result {
    let special = [CONNECT, DISCONNECT, DEFAULT].contains(&key);
    if key.is_empty() || key.len() > 128 || (key.starts_with('$') && !special) {
        return Err(ValidationError::new(
            field,
            format!(
                "{key:?} must be $connect, $disconnect, $default or 1 to 128 characters not starting with $"
            ),
        ));
    }
    Ok(())
}

/// Metered units of a message: ceil(bytes / 32 KiB), at least 1.
pub fn message_units(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(32 * 1024).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_reads_a_nested_string_field() {
        let path = selection_path("f", "$request.body.meta.action").unwrap();
        let msg = serde_json::json!({"meta": {"action": "send"}});
        assert_eq!(selected_key(&path, &msg), Some("send"));
        let not_string = serde_json::json!({"meta": {"action": 3}});
        assert_eq!(selected_key(&path, &not_string), None);
        assert_eq!(selected_key(&path, &serde_json::json!([1])), None);
    }

    #[test]
    fn bad_expressions_and_keys_name_the_field() {
        let e = selection_path("route_selection", "$request.header.x").unwrap_err();
        assert_eq!(e.field, "route_selection");
        assert!(selection_path("f", "$request.body.a..b").is_err());
        assert!(validate_route_key("k", "$other").is_err());
        assert!(validate_route_key("k", "").is_err());
        validate_route_key("k", "$default").unwrap();
        validate_route_key("k", "sendmessage").unwrap();
    }

    #[test]
    fn limits_and_units() {
        WebSocketSettings::default().validate().unwrap();
        let e = WebSocketSettings {
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1024,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "max_frame_bytes");
        assert_eq!(message_units(0), 1);
        assert_eq!(message_units(32 * 1024), 1);
        assert_eq!(message_units(32 * 1024 + 1), 2);
    }
}

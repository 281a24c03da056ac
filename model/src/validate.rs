//! Field-level validation. Every error names the field it is about, so the
//! admin API can answer `400 invalid_argument` with a message an operator can
//! act on without reading our source.

use std::fmt;

/// A document failed validation. `field` is a dotted path such as
/// `routes[2].path` or `upstream.targets[0].url`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefix the field with its parent, e.g. `path` inside `routes[1]`.
    pub fn within(mut self, parent: impl fmt::Display) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Ids of every document: `[a-z0-9-]{1,64}`.
pub fn id(field: &str, value: &str) -> Result {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{value:?} is not a valid id: use 1 to 64 characters from [a-z0-9-]"),
        ))
    }
}

pub fn non_empty(field: &str, value: &str) -> Result {
    if value.trim().is_empty() {
        Err(ValidationError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// A host name as it appears in a `Host` header, without port.
pub fn host(field: &str, value: &str) -> Result {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{value:?} is not a valid host: lower-case letters, digits, '-' and '.' only, no port"),
        ))
    }
}

pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

pub fn method(field: &str, value: &str) -> Result {
    if METHODS.contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{value:?} is not a supported method (one of {})",
                METHODS.join(", ")
            ),
        ))
    }
}

/// An upstream target URL: `http://` or `https://`, a host, an optional port,
/// and an optional path prefix; no query or fragment.
pub fn upstream_url(field: &str, value: &str) -> Result {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| {
            ValidationError::new(
                field,
                format!("{value:?} must start with http:// or https://"),
            )
        })?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(ValidationError::new(
            field,
            format!("{value:?} has no host"),
        ));
    }
    if value.contains(['?', '#', ' ']) {
        return Err(ValidationError::new(
            field,
            format!("{value:?} must not contain a query, fragment or space"),
        ));
    }
    if let Some((_, port)) = authority.rsplit_once(':') {
        if !authority.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(ValidationError::new(
                field,
                format!("{value:?} has a bad port"),
            ));
        }
    }
    Ok(())
}

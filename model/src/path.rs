//! Path templates: `/items/{id}` and `/files/{rest+}`.
//!
//! A template is a list of segments. `{name}` matches exactly one non-empty
//! segment; `{name+}` matches one or more trailing segments and may only be
//! the last. Literal segments match byte for byte.

use crate::validate::{Result, ValidationError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub segments: Vec<Segment>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_literal(seg: &str) -> bool {
    !seg.is_empty()
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*,;=:@%".contains(&b))
}

impl PathTemplate {
    /// Parse a template. `field` names the document field for errors.
    pub fn parse(field: &str, template: &str) -> Result<Self> {
        let err = |msg: String| ValidationError::new(field, msg);
        let Some(body) = template.strip_prefix('/') else {
            return Err(err(format!("{template:?} must start with '/'")));
        };
        let mut segments = Vec::new();
        if body.is_empty() {
            return Ok(Self { segments });
        }
        let parts: Vec<&str> = body.split('/').collect();
        let mut names = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, rest) = match inner.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if !valid_name(name) {
                    return Err(err(format!(
                        "{template:?}: {{{inner}}} is not a valid parameter name"
                    )));
                }
                if names.contains(&name) {
                    return Err(err(format!(
                        "{template:?}: parameter {{{name}}} appears twice"
                    )));
                }
                if rest && !last {
                    return Err(err(format!(
                        "{template:?}: {{{name}+}} must be the last segment"
                    )));
                }
                names.push(name);
                segments.push(if rest {
                    Segment::Rest(name.to_string())
                } else {
                    Segment::Param(name.to_string())
                });
            } else if part.is_empty() && last {
                // A trailing slash is not significant.
            } else if part.contains(['{', '}']) || !valid_literal(part) {
                return Err(err(format!("{template:?}: segment {part:?} is not valid")));
            } else {
                segments.push(Segment::Literal((*part).to_string()));
            }
        }
        Ok(Self { segments })
    }

    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) | Segment::Rest(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Match a request path (already split after the base path) and return
    /// the captured parameters, in template order.
    pub fn matches<'a>(&self, path: &'a str) -> Option<Vec<(&str, &'a str)>> {
        let mut captured = Vec::new();
        self.match_with(path, |name, value| captured.push((name, value)))
            .then_some(captured)
    }

    /// Whether a request path matches; each captured parameter goes to
    /// `capture` as it is found (a match that needs none allocates nothing).
    pub fn match_with<'s, 'a>(
        &'s self,
        path: &'a str,
        mut capture: impl FnMut(&'s str, &'a str),
    ) -> bool {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let mut rest = if trimmed.is_empty() {
            None
        } else {
            Some(trimmed)
        };
        for seg in &self.segments {
            let Some(current) = rest else {
                return false;
            };
            if let Segment::Rest(name) = seg {
                capture(name.as_str(), current);
                rest = None;
                continue;
            }
            let (head, tail) = match current.split_once('/') {
                Some((h, t)) => (h, Some(t)),
                None => (current, None),
            };
            match seg {
                Segment::Literal(lit) if lit == head => {}
                Segment::Param(name) if !head.is_empty() => capture(name.as_str(), head),
                _ => return false,
            }
            rest = tail;
        }
        rest.is_none()
    }

    /// Fill a rewrite template (`upstream_path`) with captured parameters.
    pub fn render(&self, params: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(n) | Segment::Rest(n) => {
                    let v = params
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| *v)
                        .unwrap_or("");
                    out.push_str(v);
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// How specific the template is, for ordering routes: literals beat
    /// parameters, parameters beat a rest match.
    pub fn specificity(&self) -> (usize, usize, usize) {
        let lits = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let params = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Param(_)))
            .count();
        let no_rest = usize::from(!matches!(self.segments.last(), Some(Segment::Rest(_))));
        (no_rest, lits, params)
    }
}

/// A base path: `/` or `/seg/seg` with literal segments, no trailing slash.
pub fn base_path(field: &str, value: &str) -> Result {
    let t = PathTemplate::parse(field, value)?;
    if t.segments.iter().any(|s| !matches!(s, Segment::Literal(_))) {
        return Err(ValidationError::new(
            field,
            format!("{value:?} must not contain parameters"),
        ));
    }
    if value.len() > 1 && value.ends_with('/') {
        return Err(ValidationError::new(
            field,
            format!("{value:?} must not end with '/'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let t = PathTemplate::parse("p", "/items/{id}").unwrap();
        assert_eq!(t.matches("/items/42"), Some(vec![("id", "42")]));
        assert_eq!(t.matches("/items/42/x"), None);
        assert_eq!(t.matches("/items"), None);
        let r = PathTemplate::parse("p", "/files/{rest+}").unwrap();
        assert_eq!(r.matches("/files/a/b/c"), Some(vec![("rest", "a/b/c")]));
        assert_eq!(r.matches("/files"), None);
        let root = PathTemplate::parse("p", "/").unwrap();
        assert_eq!(root.matches("/"), Some(vec![]));
        assert_eq!(root.matches(""), Some(vec![]));
        assert_eq!(root.matches("/x"), None);
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "items",
            "/a/{rest+}/b",
            "/{x}/{x}",
            "/{1x}",
            "/a//b",
            "/a{b}",
        ] {
            assert!(PathTemplate::parse("routes[0].path", bad).is_err(), "{bad}");
        }
        let e = PathTemplate::parse("routes[0].path", "nope").unwrap_err();
        assert_eq!(e.field, "routes[0].path");
    }

    #[test]
    fn renders_rewrites() {
        let src = PathTemplate::parse("p", "/items/{id}").unwrap();
        let dst = PathTemplate::parse("p", "/v1/items/{id}").unwrap();
        let params = src.matches("/items/7").unwrap();
        assert_eq!(dst.render(&params), "/v1/items/7");
    }
}

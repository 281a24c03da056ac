//! Reading a definition: JSON or YAML text into one JSON tree, which
//! flavour it is, and the list of what was not translated (by JSON
//! pointer, RFC 6901). No I/O.

use std::fmt;

use serde_json::{Map, Value};

/// The flavours of definition the importer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `swagger: "2.0"`: `basePath`, `securityDefinitions`, `definitions`.
    Swagger2,
    /// `openapi: 3.0.x` or `3.1.x`: `servers`, `components`.
    OpenApi3,
}

/// `text` as a JSON tree, JSON tried first (a JSON file is YAML too, but
/// the JSON parser's errors are the clearer ones for it).
pub fn parse(text: &str) -> anyhow::Result<(Value, Flavour)> {
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(json_err) => {
            let yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
                if text.trim_start().starts_with(['{', '[']) {
                    anyhow::anyhow!("not valid JSON: {json_err}")
                } else {
                    anyhow::anyhow!("not valid YAML: {e}")
                }
            })?;
            yaml_to_json(yaml)
        }
    };
    let flavour = flavour(&value)?;
    Ok((value, flavour))
}

fn flavour(doc: &Value) -> anyhow::Result<Flavour> {
    let version = |field: &str| {
        doc.get(field).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let flavour = match (version("swagger"), version("openapi")) {
        (Some(v), _) if v.starts_with('2') => Flavour::Swagger2,
        (_, Some(v)) if v.starts_with("3.") => Flavour::OpenApi3,
        (Some(v), _) | (_, Some(v)) => {
            anyhow::bail!("version {v:?} is not Swagger 2.0 or OpenAPI 3.0/3.1")
        }
        (None, None) => {
            anyhow::bail!("not an OpenAPI or Swagger document (no `openapi` or `swagger` field)")
        }
    };
    anyhow::ensure!(
        doc.get("paths").is_none_or(Value::is_object),
        "not an OpenAPI or Swagger document (`paths` is not a map)"
    );
    Ok(flavour)
}

/// YAML to JSON with every mapping key as text: real definitions write
/// `200:` unquoted, which a JSON tree cannot hold as a number key.
fn yaml_to_json(v: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match yaml_to_json(k) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, yaml_to_json(v));
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

/// A JSON pointer: `pointer(&["paths", "/pets", "get"])` is
/// `/paths/~1pets/get`.
pub fn pointer(tokens: &[&str]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// What the command line adds to the definition.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The API's id (else the title, slugified).
    pub api_id: Option<String>,
    /// The API's base path (else `basePath` or the first server's path).
    pub base_path: Option<String>,
    /// Where routes without an AWS integration forward (else the first
    /// server URL).
    pub upstream: Option<String>,
    /// The Lambda Invoke endpoint for `aws_proxy` routes.
    pub function_url: Option<String>,
    /// The endpoint of the request authorizers that replace Lambda ones.
    pub authorizer_url: Option<String>,
}

/// Placeholders for what an export cannot say; `.invalid` never resolves
/// (RFC 2606), so a forgotten one fails loudly, and each use is listed.
pub const UPSTREAM_PLACEHOLDER: &str = "http://upstream.invalid";
pub const FUNCTION_PLACEHOLDER: &str = "http://lambda.invalid";
pub const AUTHORIZER_PLACEHOLDER: &str = "http://authorizer.invalid";

/// An id (`[a-z0-9-]{1,64}`) from any text: `getPetById` is
/// `get-pet-by-id`, `Simple PetStore` is `simple-pet-store`;
/// empty when the text has no letter or digit.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            // A camelCase hump starts a word.
            if c.is_ascii_uppercase() && prev_lower {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
            prev_lower = false;
        }
    }
    out.truncate(64);
    out.trim_end_matches('-').to_string()
}

/// What the importer could not translate (or translated only in part),
/// one line each: `POINTER: what`.
#[derive(Debug, Default)]
pub struct Notes(Vec<String>);

impl Notes {
    pub fn add(&mut self, at: &str, what: impl fmt::Display) {
        self.0.push(format!("{at}: {what}"));
    }

    /// `not translated (why)`, the common case.
    pub fn untranslated(&mut self, at: &str, why: impl fmt::Display) {
        self.add(at, format_args!("not translated ({why})"));
    }

    pub fn into_lines(self) -> Vec<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_give_the_same_tree_with_text_keys() {
        let (j, f) =
            parse(r#"{"openapi":"3.0.0","paths":{"/a":{"get":{"responses":{"200":{}}}}}}"#)
                .unwrap();
        assert_eq!(f, Flavour::OpenApi3);
        let (y, _) =
            parse("openapi: 3.0.0\npaths:\n  /a:\n    get:\n      responses:\n        200: {}\n")
                .unwrap();
        assert_eq!(j, y);
    }

    #[test]
    fn flavours_and_refusals() {
        assert_eq!(parse("swagger: '2.0'").unwrap().1, Flavour::Swagger2);
        assert_eq!(parse("openapi: 3.1.0").unwrap().1, Flavour::OpenApi3);
        let no = |t: &str| parse(t).unwrap_err().to_string();
        assert!(no("kind: Api\nid: x").contains("not an OpenAPI or Swagger document"));
        assert!(no("openapi: 4.0.0").contains("not Swagger 2.0 or OpenAPI 3.0/3.1"));
        assert!(no("{\"openapi\": ").contains("not valid JSON"));
        assert!(no("a: [").contains("not valid YAML"));
        assert!(no("openapi: 3.0.0\npaths: [1]").contains("`paths` is not a map"));
    }

    #[test]
    fn slugs_are_ids() {
        assert_eq!(slug("getPetById"), "get-pet-by-id");
        assert_eq!(
            slug("Simple PetStore (OpenAPI)"),
            "simple-pet-store-open-api"
        );
        assert_eq!(slug("GET /pets/{petId}"), "get-pets-pet-id");
        assert_eq!(slug("ANY /{proxy+}"), "any-proxy");
        assert_eq!(slug("!!"), "");
        let long = slug(&"ab ".repeat(40));
        assert!(long.len() <= 64 && !long.ends_with('-'));
        tollgate_model::validate::id("id", &long).unwrap();
    }

    #[test]
    fn pointers_escape_tilde_and_slash() {
        assert_eq!(
            pointer(&["paths", "/a~b/{id}", "get"]),
            "/paths/~1a~0b~1{id}/get"
        );
        let mut n = Notes::default();
        n.untranslated("/x", "models");
        assert_eq!(n.into_lines(), ["/x: not translated (models)"]);
    }
}

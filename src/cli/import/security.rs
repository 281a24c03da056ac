//! Security schemes and requirements: API keys, AWS's JWT, Cognito and
//! Lambda authorizers, as authorizer documents and `auth` policies. No I/O.

use std::collections::BTreeMap;

use serde_json::Value;
use tollgate_model::{AuthPolicy, Authorizer, AuthorizerType};

use super::aws;
use super::spec::{pointer, slug, Flavour, Notes, Options};

/// What one security scheme became.
#[derive(Debug, Clone, PartialEq)]
enum Scheme {
    /// An API key (Tollgate reads it from `x-api-key`).
    ApiKey,
    /// An authorizer document of this id; `jwt`: scopes apply.
    Authorizer { id: String, jwt: bool },
    /// Nothing Tollgate can check.
    Untranslated,
}

/// The definition's security schemes, translated once.
pub struct Schemes {
    by_name: BTreeMap<String, Scheme>,
    pub authorizers: Vec<Authorizer>,
    /// `x-amazon-apigateway-api-key-source: AUTHORIZER`: the Lambda
    /// authorizer's `usageIdentifierKey` is the key, so no `x-api-key`.
    key_from_authorizer: bool,
}

impl Schemes {
    /// Reads `securityDefinitions` (Swagger 2) or
    /// `components.securitySchemes` (OpenAPI 3); authorizer ids are the
    /// API's id and the scheme's name, so two imports do not clash.
    pub fn read(
        doc: &Value,
        flavour: Flavour,
        api_id: &str,
        opts: &Options,
        notes: &mut Notes,
    ) -> Schemes {
        let tokens: &[&str] = match flavour {
            Flavour::Swagger2 => &["securityDefinitions"],
            Flavour::OpenApi3 => &["components", "securitySchemes"],
        };
        let defs = doc.pointer(&pointer(tokens)).and_then(Value::as_object);
        let mut schemes = Schemes {
            by_name: BTreeMap::new(),
            authorizers: Vec::new(),
            key_from_authorizer: doc
                .get("x-amazon-apigateway-api-key-source")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case("AUTHORIZER")),
        };
        for (name, def) in defs.into_iter().flatten() {
            let mut path = tokens.to_vec();
            path.push(name);
            let at = pointer(&path);
            let id = slug(&format!("{api_id}-{name}"));
            let scheme = schemes.scheme(&id, def, &at, opts, notes);
            schemes.by_name.insert(name.clone(), scheme);
        }
        schemes
    }

    fn scheme(
        &mut self,
        id: &str,
        def: &Value,
        at: &str,
        opts: &Options,
        notes: &mut Notes,
    ) -> Scheme {
        let kind = def.get("type").and_then(Value::as_str).unwrap_or("");
        let authtype = def
            .get("x-amazon-apigateway-authtype")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(ext) = def.get("x-amazon-apigateway-authorizer") {
            let at = format!("{at}/x-amazon-apigateway-authorizer");
            let Some(a) = aws::authorizer(id, ext, &at, opts, notes) else {
                return Scheme::Untranslated;
            };
            if let Err(e) = a.validate() {
                notes.add(
                    &at,
                    format_args!("authorizer/{id} is not valid ({e}); not translated"),
                );
                return Scheme::Untranslated;
            }
            let jwt = a.kind == AuthorizerType::Jwt;
            self.authorizers.push(a);
            return Scheme::Authorizer {
                id: id.to_string(),
                jwt,
            };
        }
        if kind == "apiKey" && !authtype.eq_ignore_ascii_case("awsSigv4") {
            let name = def.get("name").and_then(Value::as_str).unwrap_or("");
            let place = def.get("in").and_then(Value::as_str).unwrap_or("");
            if place != "header" || !name.eq_ignore_ascii_case("x-api-key") {
                notes.add(at, format_args!("API key in {place} {name:?}: Tollgate reads keys from the x-api-key header"));
            }
            return Scheme::ApiKey;
        }
        let what = if authtype.is_empty() { kind } else { authtype };
        notes.untranslated(
            at,
            format_args!("{what} scheme; routes that need it alone require an API key instead"),
        );
        Scheme::Untranslated
    }

    /// A `security` list as one policy: the first alternative Tollgate
    /// can check. With none, an API key: closed, never open, until the
    /// operator sets an authorizer.
    pub fn policy(&self, requirements: &Value, at: &str, notes: &mut Notes) -> AuthPolicy {
        let alternatives = requirements
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if alternatives.is_empty()
            || alternatives
                .iter()
                .any(|a| a.as_object().is_some_and(|o| o.is_empty()))
        {
            return AuthPolicy::default();
        }
        let mut chosen = None;
        for (i, alternative) in alternatives.iter().enumerate() {
            match self.alternative(alternative, &format!("{at}/{i}"), notes) {
                Some(p) if chosen.is_none() => chosen = Some(p),
                Some(_) => notes.untranslated(
                    &format!("{at}/{i}"),
                    "a further alternative; Tollgate takes the first it can check",
                ),
                None => {}
            }
        }
        chosen.unwrap_or(AuthPolicy {
            api_key: true,
            ..AuthPolicy::default()
        })
    }

    /// Every scheme of one requirement object, all of which must pass.
    fn alternative(&self, requirement: &Value, at: &str, notes: &mut Notes) -> Option<AuthPolicy> {
        let mut policy = AuthPolicy::default();
        for (name, scopes) in requirement.as_object()? {
            // AWS's exports name `api_key` without defining it.
            let scheme = match self.by_name.get(name) {
                Some(s) => s.clone(),
                None if name == "api_key" => Scheme::ApiKey,
                None => {
                    notes.untranslated(
                        &format!("{at}{}", pointer(&[name])),
                        "an undefined security scheme",
                    );
                    return None;
                }
            };
            match scheme {
                Scheme::ApiKey => policy.api_key = true,
                Scheme::Authorizer { id, jwt } => {
                    if policy.authorizer.is_some() {
                        notes.untranslated(at, "two authorizers in one requirement");
                        return None;
                    }
                    if jwt {
                        policy.scopes = scopes
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect();
                    }
                    policy.authorizer = Some(id);
                }
                Scheme::Untranslated => return None,
            }
        }
        if self.key_from_authorizer
            && policy
                .authorizer
                .as_ref()
                .is_some_and(|id| !self.is_jwt(id))
        {
            policy.api_key = false;
        }
        Some(policy)
    }

    fn is_jwt(&self, id: &str) -> bool {
        self.by_name
            .values()
            .any(|s| matches!(s, Scheme::Authorizer { id: i, jwt: true } if i == id))
    }
}

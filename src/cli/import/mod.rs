//! `tollgate import openapi FILE`: an OpenAPI 3.0/3.1 or Swagger 2.0
//! definition (AWS API Gateway exports included) as Tollgate documents,
//! printed as the YAML `apply -f` takes, or applied as `apply` does. What it
//! cannot translate goes to stderr, one line each, by JSON pointer.
//!
//! The translation (`spec`, `openapi`, `aws`, `security`) does no I/O;
//! this module reads the file and writes or applies the result.

mod aws;
mod openapi;
mod security;
mod spec;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::Context;
use tollgate_control_plane::declarative;
use tollgate_model::ResourceKind;

use super::secrets::AdminApi;

#[derive(clap::Subcommand)]
pub enum ImportCommand {
    /// An OpenAPI 3.0/3.1 or Swagger 2.0 definition, YAML or JSON, with AWS
    /// API Gateway's x-amazon-apigateway-* extensions.
    Openapi(OpenApiArgs),
}

#[derive(clap::Args)]
pub struct OpenApiArgs {
    /// The definition (`-`: standard input).
    file: PathBuf,
    /// The API's id (default: the title, as an id).
    #[arg(long, env = "TOLLGATE_API_ID", value_parser = id)]
    api_id: Option<String>,
    /// The API's base path (default: basePath, or the first server URL's path).
    #[arg(long, env = "TOLLGATE_BASE_PATH", value_parser = base_path)]
    base_path: Option<String>,
    /// Where routes without an AWS integration go (default: the first server URL).
    #[arg(long, env = "TOLLGATE_UPSTREAM", value_parser = url)]
    upstream: Option<String>,
    /// The Lambda Invoke endpoint for aws_proxy routes (default: a placeholder, listed).
    #[arg(long, env = "TOLLGATE_FUNCTION_URL", value_parser = url)]
    function_url: Option<String>,
    /// The endpoint of request authorizers made from Lambda authorizers
    /// (default: a placeholder, listed).
    #[arg(long, env = "TOLLGATE_AUTHORIZER_URL", value_parser = url)]
    authorizer_url: Option<String>,
    /// Apply the documents (as `apply -f` does) instead of printing them.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    admin: AdminApi,
}

fn id(s: &str) -> Result<String, String> {
    tollgate_model::validate::id("--api-id", s).map_err(|e| e.message)?;
    Ok(s.to_string())
}

fn base_path(s: &str) -> Result<String, String> {
    tollgate_model::path::base_path("--base-path", s).map_err(|e| e.message)?;
    Ok(s.to_string())
}

fn url(s: &str) -> Result<String, String> {
    tollgate_model::validate::upstream_url("url", s).map_err(|e| e.message)?;
    Ok(s.trim_end_matches('/').to_string())
}

pub async fn run(cmd: ImportCommand) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Openapi(args) => openapi(args).await,
    }
}

async fn openapi(args: OpenApiArgs) -> anyhow::Result<()> {
    let text = read(&args.file)?;
    let (doc, flavour) = spec::parse(&text).with_context(|| args.file.display().to_string())?;
    let opts = spec::Options {
        api_id: args.api_id,
        base_path: args.base_path,
        upstream: args.upstream,
        function_url: args.function_url,
        authorizer_url: args.authorizer_url,
    };
    let translation = openapi::translate(&doc, flavour, &opts);
    for line in &translation.notes {
        eprintln!("{line}");
    }
    let yaml = to_yaml(&translation)?;
    if !args.apply {
        print!("{yaml}");
        return Ok(());
    }
    // The same path as `apply -f` on the printed YAML.
    let docs = declarative::parse(&yaml)?;
    let token = args.admin.token()?;
    for line in declarative::apply(&args.admin.server, &token, &docs).await? {
        println!("{line}");
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The documents as one multi-document YAML text, authorizers first; each
/// must pass the model's validation (the failures go to stderr, with the
/// document and the field).
fn to_yaml(t: &openapi::Translation) -> anyhow::Result<String> {
    let mut docs = Vec::new();
    let mut invalid = Vec::new();
    for a in &t.authorizers {
        if let Err(e) = a.validate() {
            invalid.push(format!("authorizer/{}: {e}", a.id));
        }
        docs.push((ResourceKind::Authorizer, serde_json::to_value(a)?));
    }
    if let Err(e) = t.api.validate() {
        invalid.push(format!("api/{}: {e}", t.api.id));
    }
    docs.push((ResourceKind::Api, serde_json::to_value(&t.api)?));
    for line in &invalid {
        eprintln!("{line}");
    }
    anyhow::ensure!(
        invalid.is_empty(),
        "{} imported document(s) do not validate (listed above)",
        invalid.len()
    );
    let mut out = String::new();
    for (kind, doc) in &docs {
        out.push_str(&declarative::to_yaml(*kind, doc)?);
    }
    Ok(out)
}

//! Where the admin and cluster tokens come from: a file, the environment,
//! or (for a node) generated once and kept. Secrets stay off the command
//! line, where `ps` shows them.

use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(clap::Args, Clone)]
pub struct Tokens {
    /// File holding the admin token (else TOLLGATE_ADMIN_TOKEN, else one is
    /// generated into <data-dir>/admin-token).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// Tokens from a comma-separated list; blanks around them and empty
/// entries are dropped.
pub fn token_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// A secret from a file, else an environment variable, else generated and
/// kept in `dir/name` (mode 0600) so a restart reuses it.
pub fn load_or_create_secret(
    file: Option<&Path>,
    env: &str,
    dir: &Path,
    name: &str,
) -> anyhow::Result<String> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        return Ok(t.trim().to_string());
    }
    if let Ok(t) = std::env::var(env) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let path = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    std::fs::create_dir_all(dir)?;
    let token = tollgate_model::key::new_secret();
    std::fs::write(&path, &token)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    eprintln!("tollgate: generated {name}; it is in {}", path.display());
    Ok(token)
}

/// A data plane's cluster token: never generated, since it must match the
/// control plane's.
pub fn cluster_token(file: Option<&Path>) -> anyhow::Result<String> {
    Ok(match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_string(),
        None => std::env::var("TOLLGATE_CLUSTER_TOKEN")
            .context("no cluster token: set TOLLGATE_CLUSTER_TOKEN or --cluster-token-file")?,
    })
}

/// The admin token a client (`apply`) sends: never generated; falls back to
/// the one `tollgate dev` wrote into `data_dir`.
/// How a client subcommand (`apply`, `deploy`) reaches the admin API.
#[derive(clap::Args)]
pub struct AdminApi {
    #[arg(long, env = "TOLLGATE_SERVER", default_value = "http://127.0.0.1:9080")]
    pub server: String,
    #[command(flatten)]
    pub tokens: Tokens,
    /// Where `tollgate dev` keeps its generated admin token.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
    pub data_dir: PathBuf,
}

impl AdminApi {
    pub fn token(&self) -> anyhow::Result<String> {
        admin_token(&self.tokens, &self.data_dir)
    }

    pub fn client(&self) -> anyhow::Result<AdminClient> {
        Ok(AdminClient {
            base: self.server.trim_end_matches('/').to_string(),
            token: self.token()?,
            http: reqwest::Client::new(),
        })
    }
}

/// Calls to the admin API whose failures are one line: the status and
/// the API's own message.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// `method` on `/v1/{path}`, with `body` as JSON; the answer's JSON.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.context("calling the admin API")?;
        let status = res.status();
        let answer: serde_json::Value = res.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let why = answer["error"]["message"]
                .as_str()
                .unwrap_or("no reason given");
            anyhow::bail!("{status}: {why}");
        }
        Ok(answer)
    }
}

pub fn admin_token(tokens: &Tokens, data_dir: &Path) -> anyhow::Result<String> {
    Ok(
        match (
            &tokens.admin_token_file,
            std::env::var("TOLLGATE_ADMIN_TOKEN"),
        ) {
            (Some(f), _) => std::fs::read_to_string(f)?.trim().to_string(),
            (None, Ok(t)) => t,
            (None, Err(_)) => std::fs::read_to_string(data_dir.join("admin-token"))
                .context("no admin token: set TOLLGATE_ADMIN_TOKEN or --admin-token-file")?
                .trim()
                .to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::token_list;

    #[test]
    fn token_lists_drop_blanks_and_empty_entries() {
        assert_eq!(token_list(" a, b ,,c,"), ["a", "b", "c"]);
        assert!(token_list("").is_empty());
        assert!(token_list(" , ").is_empty());
    }
}

//! `tollgate apply` and `tollgate diff`: send a file of declarative
//! documents to the admin API, or show what that would change.
//! `--prune` also deletes documents of the file's kinds that it does not
//! name (never keys), after its creates and updates; `--dry-run` prints
//! the plan and writes nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tollgate_control_plane::declarative::{self, Action, Document, Planned};

use super::output::{colour, paint};
use super::secrets::AdminApi;

#[derive(clap::Args)]
pub struct ApplyArgs {
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Delete documents of the file's kinds that the file does not name.
    #[arg(long)]
    prune: bool,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    admin: AdminApi,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Include the deletions `apply --prune` would make.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    admin: AdminApi,
}

pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let token = args.admin.token()?;
    let docs = read(&args.file)?;
    let planned = declarative::plan(&args.admin.server, &token, &docs, args.prune).await?;
    if args.dry_run {
        for p in &planned {
            println!("{} (dry run)", summary(p));
        }
        return Ok(());
    }
    for line in declarative::execute(&args.admin.server, &token, &planned).await? {
        println!("{line}");
    }
    Ok(())
}

/// `tollgate diff`: what `apply` would change, as diffs of the stored
/// YAML. `Ok(true)` when something would change (exit 1, as diff(1)).
pub async fn diff(args: DiffArgs) -> anyhow::Result<bool> {
    let token = args.admin.token()?;
    let docs = read(&args.file)?;
    let planned = declarative::plan(&args.admin.server, &token, &docs, args.prune).await?;
    let on = colour();
    let mut changed = false;
    for p in planned.iter().filter(|p| p.action != Action::Unchanged) {
        changed = true;
        print!("{}", unified(p, on)?);
    }
    Ok(changed)
}

/// Parses `path` and applies it, printing one line per document; `dev
/// --config` uses it too.
pub async fn apply_file(path: &Path, server: &str, token: &str) -> anyhow::Result<()> {
    let docs = read(path)?;
    for line in declarative::apply(server, token, &docs).await? {
        println!("{line}");
    }
    Ok(())
}

/// The documents of `path` (`-`: standard input, for `tollgate get … -o
/// yaml | tollgate apply -f -`).
fn read(path: &Path) -> anyhow::Result<Vec<Document>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    declarative::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

fn summary(p: &Planned) -> String {
    let word = match p.action {
        Action::Create => "would be created",
        Action::Update => "would be configured",
        Action::Unchanged => "unchanged",
        Action::Delete => "would be deleted",
    };
    format!("{}/{} {word}", p.kind.as_str(), p.id)
}

/// One document's change as a unified diff of its YAML (cluster → file).
fn unified(p: &Planned, on: bool) -> anyhow::Result<String> {
    let yaml = |v: &Option<serde_json::Value>| -> anyhow::Result<String> {
        Ok(match v {
            Some(v) => serde_norway::to_string(v)?,
            None => String::new(),
        })
    };
    let (before, after) = (yaml(&p.before)?, yaml(&p.after)?);
    let name = format!("{}/{}", p.kind.as_str(), p.id);
    let text = similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .header(&format!("{name} (cluster)"), &format!("{name} (file)"))
        .to_string();
    Ok(text
        .lines()
        .map(|l| match l.as_bytes().first() {
            Some(b'+') if !l.starts_with("+++") => paint(l, "32", on),
            Some(b'-') if !l.starts_with("---") => paint(l, "31", on),
            Some(b'@') => paint(l, "36", on),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect())
}

//! `tollgate keys issue --tenant T --plan P [--name N]` and `tollgate keys
//! revoke ID` (contract §5.1). `issue` prints the key's id and its value,
//! the only time the value is shown.

use reqwest::Method;
use serde_json::json;

use super::secrets::AdminApi;

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Issue a key: prints its id and value (shown only now).
    Issue {
        #[arg(long)]
        tenant: String,
        /// A usage plan the key is on (repeat for more).
        #[arg(long = "plan")]
        plans: Vec<String>,
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        admin: AdminApi,
    },
    /// Revoke a key: it stops working on every data plane.
    Revoke {
        id: String,
        #[command(flatten)]
        admin: AdminApi,
    },
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Issue {
            tenant,
            plans,
            name,
            admin,
        } => {
            let body = json!({"tenant": tenant, "plans": plans, "name": name});
            let key = admin
                .client()?
                .send(Method::POST, "keys", Some(&body))
                .await?;
            println!(
                "id: {}\nvalue: {}",
                key["id"].as_str().unwrap_or_default(),
                key["value"].as_str().unwrap_or_default()
            );
        }
        KeysCommand::Revoke { id, admin } => {
            admin
                .client()?
                .send(Method::DELETE, &format!("keys/{id}"), None)
                .await?;
            println!("key {id} revoked");
        }
    }
    Ok(())
}

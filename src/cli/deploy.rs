//! `tollgate deploy API [--stage S] [--canary PERCENT]`: freeze the API as
//! a deployment, and put it on a stage (all of it, or as the stage's
//! canary), the way a CI pipeline calls it. Exit status: 0 done, 1 the
//! server refused (its error on stderr).

use reqwest::Method;
use serde_json::json;

use super::secrets::AdminApi;

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The API to deploy.
    api: String,
    /// Serve the new deployment on this (existing) stage.
    #[arg(long)]
    stage: Option<String>,
    /// Serve it to this percent of the stage's traffic as a canary
    /// instead (needs --stage).
    #[arg(long, requires = "stage", value_parser = percent)]
    canary: Option<f64>,
    /// What the deployment is for.
    #[arg(long, default_value = "")]
    description: String,
    #[command(flatten)]
    admin: AdminApi,
}

fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percent from 0 to 100")),
    }
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let admin = args.admin.client()?;
    let deployment = admin
        .send(
            Method::POST,
            &format!("apis/{}/deployments", args.api),
            Some(&json!({"description": args.description})),
        )
        .await?;
    let id = deployment["id"].as_str().unwrap_or_default().to_string();
    println!("deployment {id} of api {}", args.api);
    let Some(stage) = &args.stage else {
        return Ok(());
    };
    let path = format!("stages/{stage}");
    let mut doc = admin.send(Method::GET, &path, None).await?;
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("revision");
    }
    match args.canary {
        Some(p) => {
            let sticky = doc["canary"]["sticky"].clone();
            doc["canary"] = json!({"deployment": id, "percent": p});
            if !sticky.is_null() {
                doc["canary"]["sticky"] = sticky;
            }
        }
        None => doc["deployment"] = json!(id),
    }
    admin.send(Method::PUT, &path, Some(&doc)).await?;
    match args.canary {
        Some(p) => println!("stage {stage}: canary {id} at {p} %"),
        None => println!("stage {stage}: serving {id}"),
    }
    Ok(())
}

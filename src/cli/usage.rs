//! `tollgate usage (--plan P | --key K) [--start D] [--end D]` (contract
//! §5.1): daily used and remaining quota, with WebSocket messages and
//! connection-minutes, as a table (or `-o json`, the API's answer).

use reqwest::Method;
use serde_json::Value;
use tollgate_model::usage::{format_day, parse_day};

use super::output::columns;
use super::secrets::AdminApi;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("whose").required(true).args(["plan", "key"])))]
pub struct UsageArgs {
    /// Every key under a usage plan.
    #[arg(long)]
    plan: Option<String>,
    /// One key, under each of its plans.
    #[arg(long)]
    key: Option<String>,
    /// First UTC day (YYYY-MM-DD); the server's default without it.
    #[arg(long, value_parser = day)]
    start: Option<String>,
    /// Last UTC day (YYYY-MM-DD).
    #[arg(long, value_parser = day)]
    end: Option<String>,
    /// table (the default) or json.
    #[arg(short = 'o', long = "output", value_parser = ["table", "json"], default_value = "table")]
    output: String,
    #[command(flatten)]
    admin: AdminApi,
}

fn day(s: &str) -> Result<String, String> {
    parse_day(s)
        .map(|_| s.to_string())
        .ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

pub async fn run(args: UsageArgs) -> anyhow::Result<()> {
    let (path, series, label) = match (&args.plan, &args.key) {
        (Some(p), _) => (format!("usage-plans/{p}/usage"), "items", "KEY"),
        (None, Some(k)) => (format!("keys/{k}/usage"), "plans", "PLAN"),
        (None, None) => unreachable!("clap requires one"),
    };
    let query: Vec<String> = [("start", &args.start), ("end", &args.end)]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    let path = match query.is_empty() {
        true => path,
        false => format!("{path}?{}", query.join("&")),
    };
    let answer = args.admin.client()?.send(Method::GET, &path, None).await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", table(&answer, series, label));
    Ok(())
}

/// One row per day and key (or plan): used, remaining (`-` without a
/// quota), messages, connection-minutes.
fn table(answer: &Value, series: &str, label: &str) -> String {
    let first = answer["start"].as_str().and_then(parse_day).unwrap_or(0);
    let header = [
        "DATE",
        label,
        "USED",
        "REMAINING",
        "MESSAGES",
        "CONNECTION-MINUTES",
    ];
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    let empty = serde_json::Map::new();
    let by = answer[series].as_object().unwrap_or(&empty);
    let number = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    };
    for (who, days) in by {
        for (i, pair) in days.as_array().into_iter().flatten().enumerate() {
            let extra = |m: &str| number(&answer[m][who][i]);
            rows.push(vec![
                format_day(first + i as u32),
                who.clone(),
                number(&pair[0]),
                number(&pair[1]),
                extra("messages"),
                extra("connection_minutes"),
            ]);
        }
    }
    columns(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_day_and_key_with_dashes_for_no_quota() {
        let answer = serde_json::json!({
            "start": "2026-12-01", "end": "2026-12-02",
            "plans": {"gold": [[3, 97], [5, null]]},
            "messages": {"gold": [1, 0]}, "connection_minutes": {"gold": [0, 2]}
        });
        let t = table(&answer, "plans", "PLAN");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[1].starts_with("2026-12-01  gold  3"), "{t}");
        assert!(lines[2].contains("5     -"), "{t}");
        assert!(lines[2].trim_end().ends_with('2'), "{t}");
    }
}

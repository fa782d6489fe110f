//! `cellpay admin`: the management client over the HTTP API.

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct AdminArgs {
    /// Any node's HTTP URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Admin bearer token.
    #[arg(long, env = "CELLPAY_TOKEN")]
    token: String,
    #[command(subcommand)]
    command: AdminCmd,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Nodes, shards, leaders, terms and applied indexes.
    Cluster,
    /// Ledger totals and the conservation check (balance_sum must be 0).
    Summary,
    /// Show the tariff (fee bands and per-kind limits).
    Tariff,
    /// Replace the tariff from a JSON file.
    SetTariff { file: std::path::PathBuf },
    /// Freeze, unfreeze or close an account.
    AccountStatus { id: String, status: String },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = args.target.trim_end_matches('/');
    let request = match args.command {
        AdminCmd::Cluster => client.get(format!("{base}/v1/cluster")),
        AdminCmd::Summary => client.get(format!("{base}/v1/ledger/summary")),
        AdminCmd::Tariff => client.get(format!("{base}/v1/admin/tariff")),
        AdminCmd::SetTariff { file } => {
            let body: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
            client.put(format!("{base}/v1/admin/tariff")).json(&body)
        }
        AdminCmd::AccountStatus { id, status } => client
            .put(format!(
                "{base}/v1/admin/accounts/{}/status",
                id.replace('+', "%2B")
            ))
            .json(&serde_json::json!({ "status": status })),
    };
    let response = request.bearer_auth(&args.token).send().await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    anyhow::ensure!(status.is_success(), "the node answered {status}");
    Ok(())
}

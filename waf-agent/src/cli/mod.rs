//! The `waf-agent` command line. Edge commands (status, panic, mode, ban, allow, detach)
//! work on the pinned maps directly, so they work the same whether the agent runs or not.

pub mod edge;
pub mod output;
pub mod rules;
pub mod top;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes scripts can rely on.
pub mod exit {
    pub const OK: i32 = 0;
    /// Something failed; the message says what.
    pub const FAILURE: i32 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: i32 = 2;
    /// A guard refused the request (the panic button's lockout guard); `--force` overrides.
    pub const REFUSED: i32 = 3;
    /// The filter is not set up: no pinned maps.
    pub const NOT_RUNNING: i32 = 4;
    /// `config check`: the file has problems.
    pub const INVALID_CONFIG: i32 = 5;
}

#[derive(Debug, Parser)]
#[command(
    name = "waf-agent",
    version,
    about = "Edge security agent: XDP filtering at the NIC, reputation feeds, playbooks and an inspecting HTTP proxy"
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// bpffs directory holding the pinned maps and links.
    #[arg(long, global = true, env = "WAF_PIN_DIR", default_value = crate::config::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// The running agent's admin API socket. Edge commands go through it when the agent
    /// runs, and write the pinned maps directly when it does not.
    #[arg(long, global = true, env = "WAF_API_SOCKET", default_value = crate::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the XDP program, attach it to the configured interfaces and run the agent.
    Run(RunArgs),
    /// Show mode, attached interfaces, verdict counters and map fill.
    Status,
    /// Panic button: drop everything at the NIC that is not allow-listed.
    Panic {
        #[command(subcommand)]
        action: PanicAction,
    },
    /// Set the NIC mode: monitor counts what it would drop, enforce drops it.
    Mode { mode: ModeArg },
    /// Ban an address or CIDR at the NIC for a while.
    Ban {
        target: String,
        /// How long, e.g. 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Ban even a range that holds your own SSH client address.
        #[arg(long)]
        force: bool,
    },
    /// Lift a ban.
    Unban { target: String },
    /// Manage the allow list at run time.
    Allow {
        #[command(subcommand)]
        action: AllowAction,
    },
    /// Reputation feeds of the running agent.
    Feeds {
        #[command(subcommand)]
        action: FeedsAction,
    },
    /// The L7 rule engine, offline.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Detach the program from every interface and remove all pins.
    Detach,
    /// Security events from the running agent.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Live drops by reason and the busiest sources, refreshing in the terminal.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes.
        #[arg(long)]
        iterations: Option<u32>,
    },
    /// Shell completions and the man page.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: GenerateWhat,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file; the embedded default when omitted.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Interfaces to attach to, overriding `edge.interfaces`.
    #[arg(long = "interface", short = 'i')]
    pub interfaces: Vec<String>,
    /// State directory (bans, last good feeds), overriding `state_dir`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Seconds between edge summaries in the log.
    #[arg(long, default_value_t = 10)]
    pub summary_interval: u64,
}

#[derive(Debug, Subcommand)]
pub enum PanicAction {
    /// Switch panic mode on.
    On {
        /// Lift it by itself after this long (e.g. 15m); holds with the agent stopped.
        #[arg(long)]
        ttl: Option<String>,
        /// Skip the guard that refuses when your SSH client address is not allow-listed.
        #[arg(long)]
        force: bool,
    },
    /// Return to the mode in force before panic.
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Monitor,
    Enforce,
}

#[derive(Debug, Subcommand)]
pub enum AllowAction {
    Add { target: String },
    Rm { target: String },
    List,
}

#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// Print events as they happen (JSON lines with --json, else one line each).
    Tail {
        /// Stop after this many events.
        #[arg(long, short = 'n')]
        count: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeedsAction {
    /// Every feed with its entries, age, failures and staleness.
    List,
    /// Fetch a feed now.
    Refresh { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RulesAction {
    /// Run a raw HTTP request file through the rules; print every match and the score.
    Test {
        file: PathBuf,
        /// Configuration whose rules, mode and paranoia level apply (default: embedded).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Check a configuration file and print every problem with its path.
    Check { file: PathBuf },
    /// Print the embedded default configuration.
    Default,
    /// Make the running agent read its configuration file again (as SIGHUP does) and print
    /// what it did; exit 5 when the file was refused and the running configuration kept.
    Reload,
}

#[derive(Debug, Subcommand)]
pub enum GenerateWhat {
    Completions {
        shell: clap_complete::Shell,
    },
    Man,
    /// The admin API's OpenAPI document.
    Openapi,
}

impl ModeArg {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeArg::Monitor => "monitor",
            ModeArg::Enforce => "enforce",
        }
    }
}

/// `waf-agent config check FILE`: every problem with its path, exit 5 when there are any.
pub fn config_check(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let env = crate::config::env::Overrides::from_process();
    let checked = crate::config::Config::load(file, &env)
        .map_err(anyhow::Error::from)
        .and_then(|c| crate::daemon::check_rules(&c));
    match checked {
        Ok(()) => {
            output::print(
                json,
                &serde_json::json!({"file": file, "valid": true}),
                |_| format!("{}: valid", file.display()),
            );
            Ok(())
        }
        Err(e) => Err(edge::Exit {
            code: exit::INVALID_CONFIG,
            message: format!("{}: {e:#}", file.display()),
        }
        .into()),
    }
}

/// `waf-agent config reload`, through the running agent's API.
pub fn config_reload(socket: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let Some(result) = edge::via_api(socket, hyper::Method::POST, "/v1/config/reload", None) else {
        return Err(edge::Exit {
            code: exit::NOT_RUNNING,
            message: format!("the agent is not running (no API at {})", socket.display()),
        }
        .into());
    };
    let v = result?;
    let list = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect()
    };
    if v["applied"] != serde_json::Value::Bool(true) {
        let problems = list("problems");
        if json {
            output::print(true, &v, |_| String::new());
        }
        return Err(edge::Exit {
            code: exit::INVALID_CONFIG,
            message: format!(
                "configuration refused; the running one stays:\n  {}",
                problems.join("\n  ")
            ),
        }
        .into());
    }
    let restart = list("restart_needed");
    output::print(json, &v, |_| {
        if restart.is_empty() {
            "configuration reloaded".to_owned()
        } else {
            format!(
                "configuration reloaded; these settings take effect at the next start: {}",
                restart.join(", ")
            )
        }
    });
    Ok(())
}

/// `waf-agent events tail`: follows the running agent's event stream.
pub fn events_tail(socket: &std::path::Path, json: bool, count: Option<u64>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut seen = 0u64;
    let mut pending = Vec::new();
    let result = rt.block_on(crate::api::client::stream(socket, "/v1/events", |chunk| {
        pending.extend_from_slice(chunk);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            if count.is_some_and(|c| seen >= c) {
                return;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            let out = if json { text } else { human_event(&text) };
            let _ = writeln!(std::io::stdout(), "{out}");
            let _ = std::io::stdout().flush();
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                std::process::exit(exit::OK);
            }
        }
    }));
    match result {
        Err(crate::api::client::ClientError::NotRunning { path }) => Err(edge::Exit {
            code: exit::NOT_RUNNING,
            message: format!("the agent is not running (no API at {path})"),
        }
        .into()),
        other => other.map_err(Into::into),
    }
}

fn human_event(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    let e = &v["event"];
    let field = |k: &str| e[k].as_str().map(str::to_owned);
    let mut parts = vec![
        v["timestamp"].as_str().unwrap_or("-").to_owned(),
        e["type"].as_str().unwrap_or("?").to_owned(),
    ];
    for k in ["code", "severity", "client_ip", "rule_id", "action", "path"] {
        if let Some(x) = field(k) {
            parts.push(format!("{k}={x}"));
        }
    }
    if let Some(d) = e.get("details").filter(|d| !d.is_null()) {
        parts.push(d.to_string());
    }
    parts.join(" ")
}

/// `waf-agent feeds list|refresh`, through the running agent's API.
pub fn feeds(socket: &std::path::Path, action: &FeedsAction, json: bool) -> anyhow::Result<()> {
    let (method, path) = match action {
        FeedsAction::List => (hyper::Method::GET, "/v1/feeds".to_owned()),
        FeedsAction::Refresh { name } => {
            let encoded: String = name
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            (
                hyper::Method::POST,
                format!("/v1/feeds/refresh?name={encoded}"),
            )
        }
    };
    let Some(result) = edge::via_api(socket, method, &path, None) else {
        return Err(edge::Exit {
            code: exit::NOT_RUNNING,
            message: format!("the agent is not running (no API at {})", socket.display()),
        }
        .into());
    };
    let v = result?;
    output::print(json, &v, |v| match action {
        FeedsAction::List => {
            let mut out = format!(
                "{:<24} {:<14} {:>5} {:>9} {:>8} {:>6}  {}\n",
                "feed", "format", "score", "entries", "age", "stale", "last error"
            );
            for f in v.as_array().into_iter().flatten() {
                let age = f["age_seconds"]
                    .as_u64()
                    .map_or("never".to_owned(), |a| format!("{a}s"));
                out.push_str(&format!(
                    "{:<24} {:<14} {:>5} {:>9} {:>8} {:>6}  {}\n",
                    f["name"].as_str().unwrap_or("?"),
                    f["format"].as_str().unwrap_or("?"),
                    f["score"],
                    f["entries"],
                    age,
                    f["stale"],
                    f["last_error"].as_str().unwrap_or("-"),
                ));
            }
            out.trim_end().to_owned()
        }
        FeedsAction::Refresh { name } => {
            format!("{name}: {}", v["outcome"].as_str().unwrap_or("?"))
        }
    });
    Ok(())
}

//! The `waf-agent` command line. Edge commands (status, panic, mode, ban, allow, detach)
//! work on the pinned maps directly, so they work the same whether the agent runs or not.

pub mod edge;
pub mod output;

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
    },
    /// Lift a ban.
    Unban { target: String },
    /// Manage the allow list at run time.
    Allow {
        #[command(subcommand)]
        action: AllowAction,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Detach the program from every interface and remove all pins.
    Detach,
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
pub enum ConfigAction {
    /// Check a configuration file and print every problem with its path.
    Check { file: PathBuf },
    /// Print the embedded default configuration.
    Default,
}

#[derive(Debug, Subcommand)]
pub enum GenerateWhat {
    Completions { shell: clap_complete::Shell },
    Man,
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
    match crate::config::Config::load(file, &env) {
        Ok(_) => {
            output::print(
                json,
                &serde_json::json!({"file": file, "valid": true}),
                |_| format!("{}: valid", file.display()),
            );
            Ok(())
        }
        Err(e) => Err(edge::Exit {
            code: exit::INVALID_CONFIG,
            message: format!("{}: {e}", file.display()),
        }
        .into()),
    }
}

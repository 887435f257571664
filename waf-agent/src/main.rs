use clap::{CommandFactory as _, Parser as _};
use waf_agent::cli::{
    edge, exit, Cli, Command, ConfigAction, EventsAction, GenerateWhat, RulesAction,
};

fn main() {
    let cli = Cli::parse();
    let code = match dispatch(&cli) {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = e
                .downcast_ref::<edge::Exit>()
                .map_or(exit::FAILURE, |x| x.code);
            eprintln!("error: {e:#}");
            code
        }
    };
    std::process::exit(code);
}

fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    let pin = cli.pin_dir.as_path();
    match &cli.command {
        Command::Run(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(waf_agent::daemon::run(args, pin, &cli.socket))
        }
        Command::Status => edge::status(pin, &cli.socket, cli.json),
        Command::Panic { action } => edge::panic(pin, &cli.socket, action, cli.json),
        Command::Mode { mode } => edge::mode(pin, &cli.socket, *mode, cli.json),
        Command::Ban { target, ttl, force } => {
            edge::ban(pin, &cli.socket, target, ttl, *force, cli.json)
        }
        Command::Unban { target } => edge::unban(pin, &cli.socket, target, cli.json),
        Command::Allow { action } => edge::allow(pin, &cli.socket, action, cli.json),
        Command::Detach => edge::detach(pin, cli.json),
        Command::Feeds { action } => waf_agent::cli::feeds(&cli.socket, action, cli.json),
        Command::Rules {
            action: RulesAction::Test { file, config },
        } => waf_agent::cli::rules::test(file, config.as_ref(), cli.json),
        Command::Events {
            action: EventsAction::Tail { count },
        } => waf_agent::cli::events_tail(&cli.socket, cli.json, *count),
        Command::Top {
            interval,
            iterations,
        } => waf_agent::cli::top::run(
            pin,
            &cli.socket,
            cli.json,
            std::time::Duration::from_secs_f64(interval.max(0.1)),
            *iterations,
        ),
        Command::Config {
            action: ConfigAction::Check { file },
        } => waf_agent::cli::config_check(file, cli.json),
        Command::Config {
            action: ConfigAction::Reload,
        } => waf_agent::cli::config_reload(&cli.socket, cli.json),
        Command::Config {
            action: ConfigAction::Default,
        } => {
            print!("{}", waf_agent::config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Generate { what } => {
            let mut cmd = Cli::command();
            match what {
                GenerateWhat::Completions { shell } => {
                    clap_complete::generate(*shell, &mut cmd, "waf-agent", &mut std::io::stdout());
                }
                GenerateWhat::Man => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
                GenerateWhat::Openapi => print!("{}", waf_agent::api::docs::openapi_json()),
            }
            Ok(())
        }
    }
}

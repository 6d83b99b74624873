//! The `switchyard` command: `serve`, `check` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard::config::Config;
use switchyard::control::Control;
use switchyard::plugin::PluginHost;
use switchyard::proxy::{Switchyard, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "L7 orchestrator with sandboxed WebAssembly traffic policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic as the config file says.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file, loading its plugins, and exit.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a self-contained demo: three upstreams behind a Wasm balancer plugin.
    Demo {
        /// Where the demo's listener binds.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin API and dashboard bind.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    switchyard::telemetry::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config: path } => {
            let config = Control::restore(Config::load(&path)?).map_err(anyhow::Error::msg)?;
            let host = PluginHost::new()?;
            Switchyard::bind(&config, &host)
                .await
                .with_context(|| path.display().to_string())?
                .serve(shutdown_signal())
                .await;
        }
        Command::Check { config: path } => {
            let config = Config::load(&path)?;
            let host = PluginHost::new()?;
            switchyard::proxy::Router::build(&config, &host)
                .with_context(|| path.display().to_string())?;
            println!("{}: ok", path.display());
        }
        Command::Demo { listen, admin } => switchyard::demo::run(listen, admin).await?,
    }
    Ok(())
}

//! The `switchyard` command: `serve`, `check`, `demo`, `plugin …`,
//! `api-key …`, `completions` and `man`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard::config::Config;
use switchyard::plugin::PluginHost;
use switchyard::server::{Switchyard, shutdown_signal};

/// `--version`: the binary's, and the WIT package it speaks.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nWIT: switchyard:plugin@0.1.3 (plugins built against any 0.1.x load: 0.1.0 to 0.1.3)"
);

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    long_version = LONG_VERSION,
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
    /// Work with a plugin file without running a proxy.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Make API keys for an `api-key` filter, which stores only their
    /// digests.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Run a self-contained demo: three upstreams behind a Wasm balancer plugin.
    Demo {
        /// Where the demo's listener binds.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin API and dashboard bind.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Shell completions for SHELL (bash, zsh, fish, elvish, powershell)
    /// on stdout, e.g. `switchyard completions bash > /etc/bash_completion.d/switchyard`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout, e.g. `switchyard man > switchyard.1`.
    Man,
    /// Internal: how a pool's process starts — it dies with Switchyard
    /// (PR_SET_PDEATHSIG), then becomes COMMAND.
    #[command(hide = true)]
    ExecChild {
        /// The Switchyard that started it.
        #[arg(long)]
        parent: u32,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// A new random key and its digest: give the key to the client, put
    /// the digest in the principal's `keys`.
    New,
    /// The digest of KEY (an existing key moved to Switchyard).
    Hash {
        /// The key.
        key: String,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Which world and WIT version FILE implements, its imports, and whether
    /// this host can load it (configured with --config); non-zero exit with
    /// the reason when it cannot.
    Check {
        /// The `.wasm` component.
        file: PathBuf,
        /// The plugin's config, JSON.
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// Size, sha256, exports and imports of FILE.
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Calls FILE with synthetic inputs of its kind and prints per-call
    /// latency percentiles.
    Bench {
        /// The `.wasm` component.
        file: PathBuf,
        /// The plugin's config, JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Calls to measure.
        #[arg(long, default_value_t = 10_000)]
        iterations: usize,
        /// Meter fuel, as `plugin_fuel = true` does (to measure its cost).
        #[arg(long)]
        fuel: bool,
    },
    /// Creates a ready-to-build plugin project NAME of KIND (balancer,
    /// health-check, failover, resolver, filter) that builds anywhere: the
    /// SDK and the WIT package this binary carries are written beside it.
    New {
        /// balancer, health-check, failover, resolver or filter.
        kind: String,
        /// The project's name (and directory).
        name: String,
        /// rust (any kind), python or js (a balancer or a filter).
        #[arg(long, default_value = "rust")]
        lang: switchyard::plugin::tools::Lang,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Writes the WIT package this binary speaks (every interface and
    /// world) into DIR, for any language's bindings generator.
    Wit {
        /// Where to write it.
        #[arg(long, default_value = "wit")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    switchyard::telemetry::init();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A multi-threaded runtime of `workers` worker threads (default: Tokio's,
/// the cores the process may use).
fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.build().context("cannot start the runtime")
}

/// Runs `command`; `serve` sizes its runtime as its config file says.
fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config: path } => {
            let config = Config::load(&path, &switchyard::loaders::Loaders)?;
            runtime(config.runtime.worker_threads)?.block_on(serve(path, config))
        }
        Command::Check { config: path } => runtime(None)?.block_on(async {
            let config = Config::load(&path, &switchyard::loaders::Loaders)?;
            for deprecation in config.deprecations() {
                eprintln!("{}: warning: {deprecation}", path.display());
            }
            let host = PluginHost::for_config(&config)?;
            switchyard::gateway::Router::build(&config, &host)
                .with_context(|| path.display().to_string())?;
            println!("{}: ok", path.display());
            Ok(())
        }),
        Command::Demo { listen, admin } => {
            runtime(None)?.block_on(switchyard::demo::run(listen, admin))
        }
        Command::Plugin(command) => runtime(None)?.block_on(async { plugin(command) }),
        Command::ApiKey(ApiKeyCommand::New) => {
            let (key, digest) = switchyard::gateway::auth::new_key()
                .map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
            println!("key:    {key}\ndigest: {digest}");
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Hash { key }) => {
            println!("{}", switchyard::gateway::auth::key_digest(&key));
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "switchyard",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the man page")
        }
        Command::ExecChild { parent, command } => {
            let error = switchyard::process::exec_child(parent, &command);
            Err(anyhow::anyhow!(
                "cannot run `{}`: {error}",
                command.join(" ")
            ))
        }
    }
}

/// Serves as `config` (loaded from `path`) says, with what its store holds
/// (the admin API's state file, or etcd) over it, until a shutdown signal.
async fn serve(path: PathBuf, config: Config) -> anyhow::Result<()> {
    let (config, store, revision) = switchyard::store::open(config)
        .await
        .map_err(anyhow::Error::msg)?;
    let host = PluginHost::for_config(&config)?;
    let shutdown = shutdown_signal();
    Switchyard::bind_to_store(&config, &host, store, revision)
        .await
        .with_context(|| path.display().to_string())?
        .serve(shutdown)
        .await;
    Ok(())
}

fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    use switchyard::plugin::tools;
    let print = |file: &std::path::Path, i: &tools::Inspection| {
        println!("{}", file.display());
        println!(
            "  kind:     {}",
            i.kind.unwrap_or("none (not a Switchyard plugin)")
        );
        println!("  size:     {} bytes", i.size_bytes);
        println!("  sha256:   {}", i.sha256);
        println!("  exports:  {}", i.exports.join(", "));
        println!("  imports:  {}", i.imports.join(", "));
    };
    match command {
        PluginCommand::Check { file, config } => {
            let host = PluginHost::new()?;
            let inspection = tools::check(&host, &file, &config)?;
            print(&file, &inspection);
            println!(
                "  loads:    yes (this host implements its world; configure accepted {config})"
            );
        }
        PluginCommand::Inspect { file } => {
            let host = PluginHost::new()?;
            print(&file, &tools::inspect(&host, &file)?);
        }
        PluginCommand::Bench {
            file,
            config,
            iterations,
            fuel,
        } => {
            let host = PluginHost::with_options(None, fuel)?;
            let r = tools::bench(&host, &file, &config, iterations)?;
            println!("{}: {} plugin, {}", file.display(), r.kind, r.call);
            println!(
                "  {} calls ({} faulted): p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
                r.calls, r.faults, r.p50, r.p90, r.p99, r.max
            );
        }
        PluginCommand::New {
            kind,
            name,
            lang,
            dir,
        } => {
            let root = tools::new_plugin(&kind, &name, lang, &dir).map_err(anyhow::Error::msg)?;
            println!(
                "created {} ({kind} plugin); its README.md says how to build it",
                root.display()
            );
        }
        PluginCommand::Wit { out } => {
            let files = tools::write_wit(&out).map_err(anyhow::Error::msg)?;
            println!(
                "{}: {} ({} files)",
                out.display(),
                tools::wit_package(),
                files.len()
            );
        }
    }
    Ok(())
}

//! The `cohort-bridge` command: config → telemetry → run.

use anyhow::Context;
use clap::{Parser, Subcommand};
use cohort_bridge::app::Application;
use cohort_bridge::config::{self, CONFIG_ENV};
use cohort_bridge::operator;
use cohort_bridge::telemetry::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cohort-bridge",
    version,
    about = "Keeps LaunchDarkly big segments in step with analytics cohorts"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "COHORT_BRIDGE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge: receivers and flusher.
    Serve {
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Validate a configuration file (and the secrets it names) and exit.
    CheckConfig {
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Send recorded pushes to a bridge, signed as their source would.
    Replay {
        /// Fixture files or directories (replayed in name order).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The bridge's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Source id for every file (default: the directory name, as source id or kind).
        #[arg(long)]
        source: Option<String>,
        /// Send at most N requests per second (no burst).
        #[arg(long, value_name = "N")]
        rate: Option<std::num::NonZeroU32>,
        /// Print what would be sent (method, URL, headers with credentials
        /// redacted, body size) and send nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// List every link (cohort × destination) with its backlog, dead letters and last error.
    Links {
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Print a link's dead letters: key, when (ms), LaunchDarkly's message.
    DeadLetters {
        /// `<destination>:<source>:<cohort>`, as `links` prints it.
        link: String,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Print a link's audit trail: its LaunchDarkly writes, newest first.
    Audit {
        /// `<destination>:<source>:<cohort>`, as `links` prints it.
        link: String,
        /// Only writes at or after this time: Unix ms or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Explain why a member is (not) in a link's segment: desired state,
    /// what LaunchDarkly has per the bridge, pending writes, recent changes.
    Why {
        /// `<destination>:<source>:<cohort>`, as `links` prints it.
        link: String,
        /// The member's context key.
        key: String,
        /// Also ask LaunchDarkly for the member (one read, rate-limited).
        #[arg(long)]
        launchdarkly: bool,
        /// Print the operator API's JSON instead of text.
        #[arg(long)]
        json: bool,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Send a link's dead letters again (all of them, or the `--key`s given).
    Redrive {
        link: String,
        #[arg(long = "key")]
        keys: Vec<String>,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Rewrite a link in full: every member the bridge tracks is sent again.
    Resync {
        link: String,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Compare a link with LaunchDarkly's export of its segment and mark every
    /// difference for repair (a running bridge flushes it); prints the report.
    Reconcile {
        link: String,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Retire a link: --empty removes every member and keeps the segment,
    /// --delete deletes the segment, --freeze stops every write (unfreeze resumes).
    Retire {
        link: String,
        #[arg(long, group = "mode", required = true)]
        empty: bool,
        #[arg(long, group = "mode")]
        delete: bool,
        #[arg(long, group = "mode")]
        freeze: bool,
        /// What the link's later pushes get: accept, refuse or ignore
        /// (default: accept for --freeze, refuse otherwise).
        #[arg(long)]
        on_push: Option<String>,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Resume a frozen link: its backlog is sent.
    Unfreeze {
        link: String,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
}

/// mimalloc instead of glibc's malloc: a one-member push allocates and frees
/// a few hundred small buffers (request, keys, script arguments, replies),
/// and glibc's malloc/free (with `malloc_consolidate` on the handler's large
/// boxed future) took ~15% of the bridge's CPU per request in a profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => {
            let settings = config::load(&config)?;
            let app = Application::build(settings)?;
            tracing::info!(port = app.port(), "cohort-bridge listening.");
            let handle = Application::shutdown_handle();
            let h = handle.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("Signal received.");
                h.shutdown();
            });
            app.run(handle).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(s) => {
                for (key, msg) in &s.warnings {
                    println!("warning: {key}: {msg}");
                }
                println!(
                    "configuration OK: {} source(s), {} destination(s), {} partition(s)",
                    s.sources.len(),
                    s.destinations.len(),
                    s.redis.partitions
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprint!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Links { config } => report(operator::links(&config::load(&config)?).await),
        Command::DeadLetters { link, config } => {
            report(operator::dead_letters(&config::load(&config)?, &link).await)
        }
        Command::Audit {
            link,
            since,
            limit,
            config,
        } => report(operator::audit(&config::load(&config)?, &link, since.as_deref(), limit).await),
        Command::Why {
            link,
            key,
            launchdarkly,
            json,
            config,
        } => report(operator::why(&config::load(&config)?, &link, &key, launchdarkly, json).await),
        Command::Redrive { link, keys, config } => {
            report(operator::redrive(&config::load(&config)?, &link, &keys).await)
        }
        Command::Resync { link, config } => {
            report(operator::resync(&config::load(&config)?, &link).await)
        }
        Command::Reconcile { link, config } => {
            report(operator::reconcile(&config::load(&config)?, &link).await)
        }
        Command::Retire {
            link,
            empty,
            delete,
            freeze: _,
            on_push,
            config,
        } => {
            use cohort_bridge::store::RetireMode;
            let mode = match (empty, delete) {
                (true, _) => RetireMode::Empty,
                (_, true) => RetireMode::Delete,
                _ => RetireMode::Freeze,
            };
            report(operator::retire(&config::load(&config)?, &link, mode, on_push.as_deref()).await)
        }
        Command::Unfreeze { link, config } => {
            report(operator::unfreeze(&config::load(&config)?, &link).await)
        }
        Command::Replay {
            paths,
            url,
            source,
            rate,
            dry_run,
            config,
        } => {
            let settings = config::load(&config)?;
            let opts = cohort_bridge::replay::Options {
                source,
                rate,
                dry_run,
            };
            let summary = cohort_bridge::replay::run_cli(&settings, &url, &paths, &opts)
                .await
                .context("replay")?;
            Ok(if summary.status_5xx > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Prints an operator command's report.
fn report(text: anyhow::Result<String>) -> anyhow::Result<ExitCode> {
    print!("{}", text?);
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

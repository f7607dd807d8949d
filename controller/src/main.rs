//! plexusd: wires the config, the source, the record store and the server together.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use plexus_controller::cni::{PluginExecutor, orphans};
use plexus_controller::config::{Config, LogFormat, SourceKind};
use plexus_controller::inspect::{self, client::Inspect, client::Output};
use plexus_controller::metrics::{Metered, Metrics};
use plexus_controller::names::{ContainerId, PodKey};
use plexus_controller::records::RecordStore;
use plexus_controller::server::{self, AppState};
use plexus_controller::service::Plexus;
use plexus_controller::source::Source;
use plexus_controller::source::files::FilesSource;
use plexus_controller::source::kube::{self, KubeSource};
use plexus_controller::{conflist, hotplug, install, memory, probe, validate, webhook};

/// The Plexus node controller: attaches pods to the networks their annotations name.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// plexusd's config file (YAML). Without it, the defaults apply.
    #[arg(long, short, env = "PLEXUS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Tool>,
}

/// Small jobs around the daemon, for the DaemonSet.
#[derive(clap::Subcommand)]
enum Tool {
    /// Copies the shim into the CNI bin dir atomically (the DaemonSet's init container).
    InstallShim {
        #[arg(long, default_value = "/usr/local/bin/plexus")]
        from: PathBuf,
        #[arg(long, default_value = "/opt/cni/bin")]
        to: PathBuf,
    },
    /// Exits 0 when plexusd answers /healthz (or /readyz with --ready) on its socket.
    Probe {
        #[arg(long, default_value = "/run/plexus/plexus.sock")]
        socket: PathBuf,
        #[arg(long)]
        ready: bool,
    },
    /// Serves the admission webhook: refuses broken NADs, warns about pods whose network
    /// annotations would fail (HTTPS; see examples/deploy/webhook/).
    Webhook(webhook::WebhookArgs),
    /// Checks NAD and pod manifests (and CNI conf files) offline, as the webhook would; exits
    /// 1 when anything is invalid.
    Validate(validate::ValidateArgs),
    /// Prints what plexusd attached on this node, per container, and the last failed ADD of
    /// each pod (root only: it asks plexusd over its socket).
    Inspect {
        /// plexusd's socket; default: `socketPath` of the config file, else
        /// /run/plexus/plexus.sock.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Only this pod, as NAMESPACE/NAME.
        #[arg(long, value_parser = parse_pod)]
        pod: Option<PodKey>,
        /// Only this container (the pod sandbox's id).
        #[arg(long)]
        container: Option<ContainerId>,
        /// `json` (the endpoint's answer) or `wide` (more columns); a table without.
        #[arg(short, long)]
        output: Option<Output>,
    },
}

fn parse_pod(text: &str) -> Result<PodKey, String> {
    inspect::parse_pod(text).map_err(|e| e.to_string())
}

fn run_tool(tool: Tool, config: Option<&std::path::Path>) -> ExitCode {
    let outcome = match tool {
        Tool::InstallShim { from, to } => install::install_shim(&from, &to)
            .map(|path| format!("installed {}", path.display()))
            .map_err(|e| e.to_string()),
        Tool::Probe { socket, ready } => {
            let path = if ready { "/readyz" } else { "/healthz" };
            probe::probe(&socket, path, Duration::from_secs(3)).map_err(|e| e.to_string())
        }
        // main runs these itself: they need the config and the runtime.
        Tool::Webhook(_) | Tool::Validate(_) => Err("not a synchronous tool".into()),
        Tool::Inspect {
            socket,
            pod,
            container,
            output,
        } => inspect_socket(socket, config).and_then(|socket| {
            let filter = inspect::Filter { pod, container };
            Inspect {
                socket,
                filter,
                output,
            }
            .run()
            .map_err(|e| e.to_string())
        }),
    };
    match outcome {
        Ok(said) => {
            println!("{}", said.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plexusd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match memory::runtime() {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(e) => {
            eprintln!("plexusd: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
    let args = Args::parse();
    let config = match args.command {
        Some(Tool::Webhook(webhook)) => {
            return match load_config(args.config.as_deref()) {
                Ok(config) => run_webhook(webhook, config).await,
                Err(failed) => failed,
            };
        }
        Some(Tool::Validate(validate)) => {
            return match load_config(args.config.as_deref()) {
                Ok(config) => run_validate(validate, config).await,
                Err(failed) => failed,
            };
        }
        Some(tool) => return run_tool(tool, args.config.as_deref()),
        None => match load_config(args.config.as_deref()) {
            Ok(config) => config,
            Err(failed) => return failed,
        },
    };
    init_logging(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "plexusd stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let source: Arc<dyn Source> = match config.source {
        SourceKind::Files => {
            let files = FilesSource::load(&config.manifest_dir);
            files.watch()?;
            files
        }
        SourceKind::Kube => {
            let client = kube::client(config.kubeconfig.as_deref()).await?;
            // Its watches and writes, and the connections they open, run on a thread of
            // their own: the CNI worker serves the runtime.
            let api = memory::api_thread()?;
            let _on_api = api.enter();
            KubeSource::start(client, &config.node_name(), config.dra)
        }
    };
    let records = RecordStore::open(&config.records_dir)?;
    let metrics = Arc::new(Metrics::default());
    let owner = config.records_dir.display().to_string();
    let plugins = Arc::new(
        PluginExecutor::new(config.cni_bin_dirs.clone(), config.delegate_timeout())
            .owned_by(owner.clone())
            .start_ahead(config.delegate_start_ahead),
    );

    let executor = Arc::new(Metered::new(plugins, Arc::clone(&metrics)));
    let socket = config.socket_path.clone();
    let metrics_address = config.metrics_address;
    if config.write_conflist {
        keep_conflist_current(&config);
    }
    orphans::settle(orphans::find(&owner), config.delegate_timeout()).await;
    let plexus = Arc::new(Plexus::new(config, source, executor, records)?);
    // Before the socket is served, so the runtime's first DEL or GC already sees them.
    plexus.adopt_from_multus().await;
    tokio::spawn(hotplug::reconciler::run(
        Arc::clone(&plexus),
        Arc::clone(&metrics),
    ));
    let state = AppState { plexus, metrics };
    tokio::spawn(memory::trim_after_bursts());

    // Dropping the sender tells every server to stop.
    let (stop, stopped) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        shutdown_signal().await;
        drop(stop);
    });
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.changed().await;
        }
    };
    if let Some(address) = metrics_address {
        let (state, until) = (state.clone(), until_stopped());
        tokio::spawn(async move {
            if let Err(error) = server::serve_http(address, state, until).await {
                tracing::error!(%error, "health and metrics server failed");
            }
        });
    }
    // Accepting on a worker rather than on this thread lets the connection task it spawns run
    // next on that same worker (tokio's LIFO slot) instead of waking a second thread for every
    // request: on a VM, an inter-processor interrupt to an idle vCPU, ~50 µs here.
    let until = until_stopped();
    tokio::spawn(async move { server::serve(&socket, state, until).await }).await??;
    Ok(())
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("plexusd: {e}");
        ExitCode::FAILURE
    })
}

async fn run_webhook(args: webhook::WebhookArgs, config: Config) -> ExitCode {
    init_logging(config.log_format);
    match webhook::run(args, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "webhook stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run_validate(args: validate::ValidateArgs, config: Config) -> ExitCode {
    let rules = match plexus_controller::checks::PodRules::new(config) {
        Ok(rules) => rules,
        Err(e) => {
            eprintln!("plexusd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = validate::validate(&args, &rules, std::io::stdin().lock()).await;
    for line in &report.lines {
        println!("{line}");
    }
    eprintln!("plexusd validate: {}", report.summary());
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The socket `plexusd inspect` asks: `--socket`, else the config file's `socketPath`.
fn inspect_socket(
    socket: Option<PathBuf>,
    config: Option<&std::path::Path>,
) -> Result<PathBuf, String> {
    match socket {
        Some(socket) => Ok(socket),
        None => Config::load(config)
            .map(|c| c.socket_path)
            .map_err(|e| e.to_string()),
    }
}

/// Writes Plexus's conflist once the cluster network's config exists, and keeps it current.
fn keep_conflist_current(config: &Config) {
    // A cluster network that is a NAD has no conf file to take version and capabilities from;
    // the first conf in the directory stands in for it, as in Multus's auto-config.
    let cluster = config
        .cluster_network
        .clone()
        .filter(|n| n.starts_with('/') || !n.contains('/'));
    let task = conflist::keep_current(
        config.cni_conf_dir.clone(),
        cluster,
        config.socket_path.clone(),
        config.conflist_name.clone(),
    );
    tokio::spawn(async move {
        if let Err(error) = task.await {
            tracing::error!(%error, "cannot keep Plexus's conflist current");
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

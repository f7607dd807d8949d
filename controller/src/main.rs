//! plexusd: wires the config, the source, the record store and the server together.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use plexus_controller::cni::PluginExecutor;
use plexus_controller::config::{Config, LogFormat, SourceKind};
use plexus_controller::metrics::{Metered, Metrics};
use plexus_controller::records::RecordStore;
use plexus_controller::server::{self, AppState};
use plexus_controller::service::Plexus;
use plexus_controller::source::Source;
use plexus_controller::source::files::FilesSource;
use plexus_controller::source::kube::{self, KubeSource};
use plexus_controller::{conflist, hotplug, install, probe};

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
}

fn run_tool(tool: Tool) -> ExitCode {
    let outcome = match tool {
        Tool::InstallShim { from, to } => install::install_shim(&from, &to)
            .map(|path| format!("installed {}", path.display()))
            .map_err(|e| e.to_string()),
        Tool::Probe { socket, ready } => {
            let path = if ready { "/readyz" } else { "/healthz" };
            probe::probe(&socket, path, Duration::from_secs(3)).map_err(|e| e.to_string())
        }
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

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(tool) = args.command {
        return run_tool(tool);
    }
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("plexusd: {e}");
            return ExitCode::FAILURE;
        }
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
            KubeSource::start(client, &config.node_name())
        }
    };
    let records = RecordStore::open(&config.records_dir)?;
    let metrics = Arc::new(Metrics::default());
    let plugins = Arc::new(PluginExecutor::new(
        config.cni_bin_dirs.clone(),
        config.delegate_timeout(),
    ));
    let executor = Arc::new(Metered::new(plugins, Arc::clone(&metrics)));
    let socket = config.socket_path.clone();
    let metrics_address = config.metrics_address;
    if config.write_conflist {
        keep_conflist_current(&config);
    }
    let plexus = Arc::new(Plexus::new(config, source, executor, records)?);
    tokio::spawn(hotplug::reconciler::run(
        Arc::clone(&plexus),
        Arc::clone(&metrics),
    ));
    let state = AppState { plexus, metrics };

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
    server::serve(&socket, state, until_stopped()).await?;
    Ok(())
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

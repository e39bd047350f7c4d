//! `confab`: serve, migrate, token, health.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use confab::app::{AppState, Server};
use confab::auth::JwtKeys;
use confab::config::{DEFAULT_LOG, LogFormat, Seconds, Settings, SettingsArgs};
use confab::store::Store;
use confab_signaling::OpaqueId;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "confab",
    version,
    about = "Self-hosted SFU media server with call signaling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand shares: the settings and where to read more of them.
#[derive(clap::Args)]
struct Common {
    /// TOML file with settings; flags and environment variables override it
    #[arg(long, env = "CONFAB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (applies migrations first)
    Serve {
        /// Demo page at /, dev token route, generated secret. Unsafe for production.
        #[arg(long)]
        dev: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Apply database migrations and exit
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Print a signed JWT for a user
    Token {
        /// User id (the `sub` claim)
        #[arg(long)]
        user: String,
        /// Display name
        #[arg(long)]
        name: Option<String>,
        /// A service token for the host application
        #[arg(long)]
        admin: bool,
        /// Lifetime, e.g. 3600, 90s, 15m, 1h
        #[arg(long, default_value = "1h")]
        ttl: Seconds,
        #[command(flatten)]
        common: Common,
    },
    /// Probe a running server's readiness: exit 0 when GET /readyz answers 200, else 1
    ///
    /// Meant for container health checks, so the image needs no shell or curl.
    Health {
        /// URL to probe instead of /readyz on the configured http_addr
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up after this long, e.g. 3, 500ms
        #[arg(long, default_value = "3s")]
        timeout: humantime::Duration,
        #[command(flatten)]
        common: Common,
    },
}

fn load(common: Common, dev: bool) -> Result<Settings, String> {
    Settings::load(common.settings, common.config.as_deref(), dev).map_err(|e| e.to_string())
}

/// Logs to stderr as text, or as one JSON object a line with the event's fields at the top
/// level (`timestamp`, `level`, `target`, `message`, then the fields).
fn init_tracing(filter: &str, format: LogFormat) {
    let (env_filter, refused) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT_LOG), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    // Said through the logger, so that a JSON log stays JSON.
    if let Some(e) = refused {
        tracing::warn!(filter, error = %e, "invalid log filter; using {DEFAULT_LOG}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { dev, common } => load(common, dev).and_then(serve),
        Command::Migrate { common } => load(common, false).and_then(migrate),
        Command::Token {
            user,
            name,
            admin,
            ttl,
            common,
        } => load(common, false).and_then(|s| token(s, &user, name.as_deref(), admin, ttl.0)),
        Command::Health {
            url,
            timeout,
            common,
        } => load(common, false).and_then(|s| health(&s, url, timeout.into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("confab-http")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn serve(settings: Settings) -> Result<(), String> {
    init_tracing(&settings.log, settings.log_format);
    if settings.dev {
        tracing::warn!(
            "running with --dev: demo page, dev token route and possibly a generated secret. \
             This is unsafe for production."
        );
    }
    tracing::debug!(?settings, "starting");
    runtime()?.block_on(async move {
        let state = AppState::start(settings).await.map_err(|e| e.to_string())?;
        let server = Server::bind(state).await.map_err(|e| e.to_string())?;
        let addr = server.local_addr();
        // Scripts and tests read this exact line to find the bound port.
        println!("listening on http://{addr}");
        tracing::info!(%addr, database = server.state().store.backend_name(), "serving");
        let mut signals = Signals::new().map_err(|e| format!("cannot watch signals: {e}"))?;
        let terminate = async move {
            signals.next().await;
            tracing::info!("shutting down: draining first; a second signal exits at once");
            tokio::spawn(async move {
                signals.next().await;
                tracing::warn!("second signal: exiting without finishing the drain");
                std::process::exit(EXIT_SECOND_SIGNAL);
            });
        };
        server
            .run_until_terminated(terminate)
            .await
            .map_err(|e| format!("server failed: {e}"))
    })
}

/// The exit status when a second SIGTERM or SIGINT cuts the drain short (128 + SIGTERM, as a
/// shell reports a process killed by it).
const EXIT_SECOND_SIGNAL: i32 = 143;

/// SIGTERM and SIGINT, each registered once, so that a second signal is never missed between
/// two waits.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next SIGTERM or SIGINT (Ctrl-C elsewhere).
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn migrate(settings: Settings) -> Result<(), String> {
    init_tracing(&settings.log, settings.log_format);
    runtime()?.block_on(async move {
        let store = Store::connect(&settings.database_url)
            .await
            .map_err(|e| e.to_string())?;
        store.migrate().await.map_err(|e| e.to_string())?;
        store.close().await;
        eprintln!("migrations applied ({})", store.backend_name());
        Ok(())
    })
}

fn token(
    settings: Settings,
    user: &str,
    name: Option<&str>,
    admin: bool,
    ttl: Duration,
) -> Result<(), String> {
    let user = OpaqueId::parse(user).map_err(|e| e.message)?;
    let keys = JwtKeys::new(
        settings.jwt_secret.as_deref(),
        settings.jwt_public_key.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let token = keys
        .issue(&user, name, admin, ttl)
        .map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

/// Where a local probe reaches a listener: a wildcard address is reached on loopback.
fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn health(settings: &Settings, url: Option<String>, timeout: Duration) -> Result<(), String> {
    let url = url.unwrap_or_else(|| format!("http://{}/readyz", probe_addr(settings.http_addr)));
    let status = runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
        Ok::<_, String>(response.status())
    })?;
    if status == reqwest::StatusCode::OK {
        println!("{url}: {status}");
        Ok(())
    } else {
        Err(format!("{url}: {status}"))
    }
}

/// An error and its causes on one line (reqwest's own message omits "connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

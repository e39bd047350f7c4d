//! `confab-loadgen`: joins publisher and subscriber bots to a Confab call and measures what the
//! server costs per forwarded packet, next to the floor of a bare SRTP forwarder on the same
//! machine. See `benches/README.md` for the scenarios and recorded results.

// The report's JSON line is one `json!` literal of about fifty keys, past the macro's default
// recursion depth.
#![recursion_limit = "256"]

mod api;
mod client;
mod expect;
mod floor;
mod media;
mod procfs;
mod recorder;
mod report;
mod run;
mod rx_time;
mod scenario;
mod server;
mod server_metrics;
mod stamp;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Load generator for Confab.
#[derive(Debug, Parser)]
#[command(name = "confab-loadgen", version)]
pub struct Args {
    /// Base URL of a running server; without it a server is started here. Its pid is found
    /// from the listening port unless --server-pid is given.
    #[arg(long)]
    server: Option<String>,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, default_value = "confab-loadgen-secret")]
    secret: String,
    /// Pid of the running server, for its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// `confab` binary to start (default: the one next to this executable).
    #[arg(long)]
    confab_bin: Option<PathBuf>,
    /// Media worker threads of a server started here (0 = one per core).
    #[arg(long)]
    media_workers: Option<usize>,
    /// audio-50, meeting-50, webinar, churn or custom.
    #[arg(long, default_value = "audio-50")]
    scenario: String,
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds of traffic before the window opens.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Participants in the call (overrides the scenario).
    #[arg(long)]
    participants: Option<u32>,
    /// How many of them publish (overrides the scenario).
    #[arg(long)]
    publishers: Option<u32>,
    /// Publishers send no audio.
    #[arg(long)]
    no_audio: bool,
    /// Video bitrate per publisher in kbit/s (0 = no video).
    #[arg(long)]
    video_kbps: Option<u32>,
    /// Video frames per second.
    #[arg(long)]
    video_fps: Option<u32>,
    /// Send cameras as three simulcast layers and choose layers per viewer with rtc:subscribe
    /// (the default of meeting-50).
    #[arg(long, conflicts_with = "no_simulcast")]
    simulcast: bool,
    /// Send cameras as one layer, to everyone.
    #[arg(long)]
    no_simulcast: bool,
    /// With simulcast: cameras each subscriber views at the low layer.
    #[arg(long)]
    low_tiles: Option<u32>,
    /// With simulcast: cameras each subscriber views at the high layer.
    #[arg(long)]
    high_tiles: Option<u32>,
    /// The server's loudest-N: audio streams forwarded (0 = all). A server started here is
    /// given it (default: the scenario's, audio-50 0, otherwise the server's 3); for a running
    /// server it says what that server is configured with (default: the server's default, 3).
    #[arg(long)]
    loudest_n: Option<u32>,
    /// Audio publishers from which loudest-N applies (passed on like --loudest-n; default 10).
    #[arg(long)]
    loudest_n_min: Option<u32>,
    /// With simulcast: longest wait, in seconds, for every subscriber to receive each camera at
    /// the layer it chose before the warm-up starts.
    #[arg(long, default_value_t = 90)]
    settle_timeout: u64,
    /// Join/leave cycles after the window (churn).
    #[arg(long)]
    cycles: Option<u32>,
    /// Media threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds the floor forwarder is measured (0 = skip the floor).
    #[arg(long, default_value_t = 10)]
    floor_duration: u64,
}

/// `confab-loadgen floor-serve`: the floor forwarder child (internal).
#[derive(Debug, Parser)]
#[command(name = "confab-loadgen floor-serve")]
struct FloorServeArgs {
    #[arg(long)]
    streams: u32,
    #[arg(long)]
    fanout: u32,
    /// Comma-separated ports of the subscriber sockets on 127.0.0.1.
    #[arg(long)]
    sinks: String,
}

/// The bots' own webrtc-rs stack logs through `log`; `CONFAB_LOADGEN_LOG` (an env-filter
/// directive such as `rtc_dtls=debug`) shows it on stderr, for telling why a bot's connection
/// stalled. Off by default: the run's progress and report are the output.
fn init_log() {
    let Ok(filter) = std::env::var("CONFAB_LOADGEN_LOG") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> std::process::ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("floor-serve") {
        argv.remove(1);
        let args = FloorServeArgs::parse_from(argv);
        let sinks: Vec<SocketAddr> = args
            .sinks
            .split(',')
            .filter_map(|p| p.parse::<u16>().ok())
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        return match floor::serve(args.streams, args.fanout, &sinks) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("floor: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse_from(argv);
    init_log();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("confab-loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! One `Settings` struct, assembled from flags, environment variables and an optional TOML
//! file, in that order of precedence (contract section 1).
//!
//! The same `SettingsArgs` type is both the clap argument group and the TOML document, so a
//! setting cannot exist in one source and be forgotten in another: env `CONFAB_HTTP_ADDR` =
//! flag `--http-addr` = TOML key `http_addr`.

use confab_sfu::EngineConfig;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::webhooks::{RetrySchedule, WebhookConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

fn invalid(name: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.into(),
    }
}

/// A duration given as whole seconds (`45`) or with a unit (`90s`, `15m`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(Seconds(Duration::from_secs(secs)));
        }
        humantime::parse_duration(s)
            .map(Seconds)
            .map_err(|e| format!("{s:?} is not a duration (e.g. 45, 90s, 15m, 1h): {e}"))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(secs) => Ok(Seconds(Duration::from_secs(secs))),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Every setting of the contract, each optional so that the sources can be layered.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsArgs {
    /// HTTP + WebSocket listen address (`:0` picks a free port)
    #[arg(long, env = "CONFAB_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// `sqlite://PATH` (created on first start) or `postgres://…`
    #[arg(long, env = "CONFAB_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// HS256 secret for client tokens
    #[arg(
        long,
        env = "CONFAB_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM public key (RS256 or EdDSA), inline or a file path
    #[arg(long, env = "CONFAB_JWT_PUBLIC_KEY", value_name = "PEM")]
    pub jwt_public_key: Option<String>,
    /// Media UDP port of worker 0; worker k listens on port + k (0: any free port)
    #[arg(long, env = "CONFAB_RTC_UDP_PORT", value_name = "PORT")]
    pub rtc_udp_port: Option<u16>,
    /// Media worker threads (0: one per core)
    #[arg(long, env = "CONFAB_MEDIA_WORKERS", value_name = "N")]
    pub media_workers: Option<usize>,
    /// Address the media sockets bind
    #[arg(long, env = "CONFAB_RTC_BIND_IP", value_name = "IP")]
    pub rtc_bind_ip: Option<IpAddr>,
    /// Address announced in ICE candidates (1:1 NAT)
    #[arg(long, env = "CONFAB_RTC_PUBLIC_IP", value_name = "IP")]
    pub rtc_public_ip: Option<IpAddr>,
    /// Loudest-N audio: in large calls forward only this many audio streams (0: all)
    #[arg(long, env = "CONFAB_LOUDEST_N", value_name = "N")]
    pub loudest_n: Option<usize>,
    /// Participants publishing audio from which loudest-N applies
    #[arg(long, env = "CONFAB_LOUDEST_N_MIN_PARTICIPANTS", value_name = "N")]
    pub loudest_n_min_participants: Option<usize>,
    /// Ringing longer than this becomes missed
    #[arg(long, env = "CONFAB_RING_TIMEOUT_S", value_name = "DURATION")]
    pub ring_timeout_s: Option<Seconds>,
    /// How long a joined participant may be gone before it has left
    #[arg(long, env = "CONFAB_DISCONNECT_GRACE_S", value_name = "DURATION")]
    pub disconnect_grace_s: Option<Seconds>,
    /// Joined participants per call
    #[arg(long, env = "CONFAB_MAX_PARTICIPANTS", value_name = "N")]
    pub max_participants: Option<usize>,
    /// When set, /metrics needs `Authorization: Bearer <token>`
    #[arg(
        long,
        env = "CONFAB_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// TURN URLs handed to clients (comma-separated)
    #[arg(long, env = "CONFAB_TURN_URLS", value_name = "URLS")]
    pub turn_urls: Option<String>,
    /// Shared secret for time-limited TURN credentials (coturn REST API)
    #[arg(
        long,
        env = "CONFAB_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,
    /// Lifetime of TURN credentials
    #[arg(long, env = "CONFAB_TURN_TTL_S", value_name = "DURATION")]
    pub turn_ttl_s: Option<Seconds>,
    /// STUN URLs handed to clients (comma-separated)
    #[arg(long, env = "CONFAB_STUN_URLS", value_name = "URLS")]
    pub stun_urls: Option<String>,
    /// Origins allowed for CORS and WebSocket upgrades (comma-separated, `*` for any)
    #[arg(long, env = "CONFAB_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Redis URL; set = cluster mode (needs a postgres:// database)
    #[arg(long, env = "CONFAB_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// This node's id in cluster mode (default: hostname + random suffix)
    #[arg(long, env = "CONFAB_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// tracing filter, e.g. `info` or `confab=debug,info`
    #[arg(long, env = "CONFAB_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// URLs that receive call events (comma-separated); needs a webhook secret
    #[arg(long, env = "CONFAB_WEBHOOK_URLS", value_name = "URLS")]
    pub webhook_urls: Option<String>,
    /// HMAC-SHA256 key of the `Confab-Signature` header of webhooks
    #[arg(
        long,
        env = "CONFAB_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Log lines as `text` or `json` (one JSON object a line)
    #[arg(long, env = "CONFAB_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// On SIGTERM or an admin drain: how long to wait for calls to end before closing them
    #[arg(long, env = "CONFAB_DRAIN_TIMEOUT_S", value_name = "DURATION")]
    pub drain_timeout_s: Option<Seconds>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

/// The log filter without `--log`: Confab at `info`; the media engine's crates only above their
/// routine chatter (rtc logs every negotiation at `info`, and warns on every handshake about a
/// server name and about media that arrives a moment before its keys).
pub const DEFAULT_LOG: &str = "info,rtc=error,rtc_ice=warn,rtc_dtls=error";

/// Field-by-field `self.or(lower)`: the macro keeps the list of fields in one place.
macro_rules! layer {
    ($high:expr, $low:expr, [$($field:ident),+ $(,)?]) => {
        SettingsArgs { $($field: $high.$field.or($low.$field)),+ }
    };
}

impl SettingsArgs {
    /// Values set here win; the gaps are filled from `lower`.
    pub fn or(self, lower: SettingsArgs) -> SettingsArgs {
        layer!(
            self,
            lower,
            [
                http_addr,
                database_url,
                jwt_secret,
                jwt_public_key,
                rtc_udp_port,
                media_workers,
                rtc_bind_ip,
                rtc_public_ip,
                loudest_n,
                loudest_n_min_participants,
                ring_timeout_s,
                disconnect_grace_s,
                max_participants,
                metrics_token,
                turn_urls,
                turn_secret,
                turn_ttl_s,
                stun_urls,
                allowed_origins,
                redis_url,
                node_id,
                log,
                webhook_urls,
                webhook_secret,
                log_format,
                drain_timeout_s,
            ]
        )
    }

    pub fn from_toml_file(path: &Path) -> Result<SettingsArgs, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

/// Where CORS and WebSocket upgrades may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    Any,
    List(Vec<String>),
}

impl AllowedOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// The resolved configuration: every default applied, every value checked.
#[derive(Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<String>,
    pub rtc_udp_port: u16,
    pub media_workers: usize,
    pub rtc_bind_ip: IpAddr,
    pub rtc_public_ip: Option<IpAddr>,
    /// Audio streams forwarded in a large call; 0 forwards all.
    pub loudest_n: usize,
    /// Participants publishing audio from which a call is large.
    pub loudest_n_min_participants: usize,
    pub ring_timeout: Duration,
    pub disconnect_grace: Duration,
    pub max_participants: usize,
    pub metrics_token: Option<String>,
    pub turn_urls: Vec<String>,
    pub turn_secret: Option<String>,
    pub turn_ttl: Duration,
    pub stun_urls: Vec<String>,
    pub allowed_origins: AllowedOrigins,
    pub redis_url: Option<String>,
    /// This node's id in cluster mode: the configured one, or generated at start.
    pub node_id: String,
    pub log: String,
    /// Where call events are POSTed; empty = no webhooks.
    pub webhook_urls: Vec<String>,
    /// Signs webhooks; always set when `webhook_urls` is not empty.
    pub webhook_secret: Option<String>,
    /// When failed webhooks are retried. The contract fixes an hour of exponential backoff, so
    /// it is no public setting; tests shorten it.
    pub webhook_retry: RetrySchedule,
    pub log_format: LogFormat,
    /// How long a draining node waits for its calls to end before it ends them (`drained`).
    pub drain_timeout: Duration,
    /// `serve --dev`: demo page, dev token route, generated secret.
    pub dev: bool,
    /// How often quality is measured and announced (`call:quality`). The contract fixes it at
    /// 5 s, so it is no public setting; tests shorten it.
    pub quality_interval: Duration,
}

impl fmt::Debug for Settings {
    /// Secrets are never printed, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("http_addr", &self.http_addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("jwt_secret", &redact(&self.jwt_secret))
            .field("jwt_public_key", &self.jwt_public_key.is_some())
            .field("rtc_udp_port", &self.rtc_udp_port)
            .field("media_workers", &self.media_workers)
            .field("rtc_bind_ip", &self.rtc_bind_ip)
            .field("rtc_public_ip", &self.rtc_public_ip)
            .field("loudest_n", &self.loudest_n)
            .field(
                "loudest_n_min_participants",
                &self.loudest_n_min_participants,
            )
            .field("ring_timeout", &self.ring_timeout)
            .field("disconnect_grace", &self.disconnect_grace)
            .field("max_participants", &self.max_participants)
            .field("metrics_token", &redact(&self.metrics_token))
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &redact(&self.turn_secret))
            .field("turn_ttl", &self.turn_ttl)
            .field("stun_urls", &self.stun_urls)
            .field("allowed_origins", &self.allowed_origins)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("node_id", &self.node_id)
            .field("log", &self.log)
            .field("webhook_urls", &self.webhook_urls)
            .field("webhook_secret", &redact(&self.webhook_secret))
            .field("webhook_retry", &self.webhook_retry)
            .field("log_format", &self.log_format)
            .field("drain_timeout", &self.drain_timeout)
            .field("dev", &self.dev)
            .field("quality_interval", &self.quality_interval)
            .finish()
    }
}

/// Hides the password of `scheme://user:password@host/…`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:<redacted>{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `:8080` and `:0` mean the default host with that port.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, ConfigError> {
    let full = if text.starts_with(':') {
        format!("127.0.0.1{text}")
    } else {
        text.to_owned()
    };
    full.parse().map_err(|_| {
        invalid(
            "http_addr",
            format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:8080 or :0)"),
        )
    })
}

fn comma_list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Webhook URLs must be absolute http(s) URLs, and unsigned webhooks are refused: a receiver
/// could not tell them from forgeries.
fn check_webhooks(urls: &[String], secret: Option<&str>) -> Result<(), ConfigError> {
    for url in urls {
        let scheme = reqwest::Url::parse(url).map(|u| u.scheme().to_owned());
        if !matches!(scheme.as_deref(), Ok("http" | "https")) {
            return Err(invalid(
                "webhook_urls",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
    }
    if !urls.is_empty() && secret.is_none() {
        return Err(invalid(
            "webhook_secret",
            "webhook_urls is set but webhook_secret is not: webhooks must be signed",
        ));
    }
    Ok(())
}

impl Settings {
    /// Flags and environment (already merged by clap) over the optional TOML file.
    pub fn load(
        args: SettingsArgs,
        config_file: Option<&Path>,
        dev: bool,
    ) -> Result<Settings, ConfigError> {
        let file = match config_file {
            Some(path) => SettingsArgs::from_toml_file(path)?,
            None => SettingsArgs::default(),
        };
        Settings::resolve(args.or(file), dev)
    }

    pub fn resolve(args: SettingsArgs, dev: bool) -> Result<Settings, ConfigError> {
        let http_addr = parse_listen_addr(args.http_addr.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let database_url = args
            .database_url
            .unwrap_or_else(|| "sqlite://confab.db".to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "expected sqlite://PATH or postgres://…",
            ));
        }
        let max_participants = args.max_participants.unwrap_or(50);
        if max_participants < 2 {
            return Err(invalid("max_participants", "a call needs at least 2"));
        }
        let ring_timeout = args.ring_timeout_s.map_or(Duration::from_secs(45), |s| s.0);
        if ring_timeout.is_zero() {
            return Err(invalid("ring_timeout_s", "must be positive"));
        }
        let turn_ttl = args.turn_ttl_s.map_or(Duration::from_secs(3600), |s| s.0);
        if turn_ttl.is_zero() {
            return Err(invalid("turn_ttl_s", "must be positive"));
        }
        let loudest_n_min_participants = args
            .loudest_n_min_participants
            .unwrap_or(EngineConfig::DEFAULT_LOUDEST_N_MIN_PARTICIPANTS);
        if loudest_n_min_participants == 0 {
            return Err(invalid(
                "loudest_n_min_participants",
                "must be at least 1 (turn loudest-N off with loudest_n = 0)",
            ));
        }
        let redis_url = non_empty(args.redis_url);
        if let Some(url) = &redis_url {
            if database_url.starts_with("sqlite:") {
                return Err(invalid(
                    "redis_url",
                    "cluster mode (redis_url) needs a postgres:// database_url: \
                     a SQLite file belongs to one node",
                ));
            }
            crate::cluster::connection::client(url)
                .map_err(|e| invalid("redis_url", e.to_string()))?;
        }
        let node_id = match non_empty(args.node_id) {
            Some(id) if crate::cluster::node_id::is_valid(&id) => id,
            Some(id) => {
                return Err(invalid(
                    "node_id",
                    format!(
                        "{id:?}: expected 1..{} characters of [A-Za-z0-9._-]",
                        crate::cluster::node_id::MAX_LEN
                    ),
                ));
            }
            None => crate::cluster::node_id::generate(),
        };
        let allowed_origins = match comma_list(args.allowed_origins) {
            list if list.is_empty() || list.iter().any(|o| o == "*") => AllowedOrigins::Any,
            list => AllowedOrigins::List(list),
        };
        let webhook_urls = comma_list(args.webhook_urls);
        let webhook_secret = non_empty(args.webhook_secret);
        check_webhooks(&webhook_urls, webhook_secret.as_deref())?;
        let settings = Settings {
            http_addr,
            database_url,
            jwt_secret: non_empty(args.jwt_secret),
            jwt_public_key: non_empty(args.jwt_public_key),
            rtc_udp_port: args.rtc_udp_port.unwrap_or(50000),
            media_workers: args.media_workers.unwrap_or(0),
            rtc_bind_ip: args.rtc_bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            rtc_public_ip: args.rtc_public_ip,
            loudest_n: args.loudest_n.unwrap_or(EngineConfig::DEFAULT_LOUDEST_N),
            loudest_n_min_participants,
            ring_timeout,
            disconnect_grace: args
                .disconnect_grace_s
                .map_or(Duration::from_secs(15), |s| s.0),
            max_participants,
            metrics_token: non_empty(args.metrics_token),
            turn_urls: comma_list(args.turn_urls),
            turn_secret: non_empty(args.turn_secret),
            turn_ttl,
            stun_urls: comma_list(args.stun_urls),
            allowed_origins,
            redis_url,
            node_id,
            log: args.log.unwrap_or_else(|| DEFAULT_LOG.to_owned()),
            webhook_urls,
            webhook_secret,
            webhook_retry: RetrySchedule::default(),
            log_format: args.log_format.unwrap_or_default(),
            drain_timeout: args
                .drain_timeout_s
                .map_or(Duration::from_secs(30), |s| s.0),
            dev,
            quality_interval: Duration::from_secs(5),
        };
        Ok(settings)
    }

    /// Media worker threads to start: the configured count, or one per core.
    pub fn effective_media_workers(&self) -> usize {
        if self.media_workers > 0 {
            self.media_workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The webhook configuration, if any URL is set.
    pub fn webhooks(&self) -> Option<WebhookConfig> {
        match (&self.webhook_secret, self.webhook_urls.is_empty()) {
            (Some(secret), false) => Some(WebhookConfig {
                urls: self.webhook_urls.clone(),
                secret: secret.clone(),
                retry: self.webhook_retry,
            }),
            _ => None,
        }
    }

    /// Settings for tests and embedding: every default, an HS256 secret, a given database.
    pub fn for_tests(database_url: &str, jwt_secret: &str) -> Settings {
        let args = SettingsArgs {
            http_addr: Some("127.0.0.1:0".to_owned()),
            database_url: Some(database_url.to_owned()),
            jwt_secret: Some(jwt_secret.to_owned()),
            rtc_udp_port: Some(0),
            ..SettingsArgs::default()
        };
        // The values above are all valid, so resolving cannot fail.
        Settings::resolve(args, false).unwrap_or_else(|e| panic!("test settings: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_plain_seconds_and_units() {
        assert_eq!("45".parse::<Seconds>().unwrap().0, Duration::from_secs(45));
        assert_eq!("90s".parse::<Seconds>().unwrap().0, Duration::from_secs(90));
        assert_eq!(
            "15m".parse::<Seconds>().unwrap().0,
            Duration::from_secs(900)
        );
        assert_eq!(
            "1h".parse::<Seconds>().unwrap().0,
            Duration::from_secs(3600)
        );
        assert!("soon".parse::<Seconds>().is_err());
    }

    #[test]
    fn flags_beat_file_and_defaults_fill_the_rest() {
        let file: SettingsArgs = toml::from_str(
            r#"
            http_addr = "127.0.0.1:9000"
            ring_timeout_s = "2m"
            max_participants = 10
            turn_urls = "turn:a.example:3478, turn:b.example:3478"
            "#,
        )
        .unwrap();
        let flags = SettingsArgs {
            http_addr: Some(":0".into()),
            ..Default::default()
        };
        let s = Settings::resolve(flags.or(file), false).unwrap();
        assert_eq!(s.http_addr, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert_eq!(s.ring_timeout, Duration::from_secs(120));
        assert_eq!(s.max_participants, 10);
        assert_eq!(s.turn_urls.len(), 2);
        assert_eq!(s.database_url, "sqlite://confab.db");
        assert_eq!(s.disconnect_grace, Duration::from_secs(15));
        assert_eq!(s.allowed_origins, AllowedOrigins::Any);
        assert_eq!((s.loudest_n, s.loudest_n_min_participants), (3, 10));
        assert_eq!(s.drain_timeout, Duration::from_secs(30));
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn drain_timeout_and_log_format_come_from_the_file() {
        let file: SettingsArgs =
            toml::from_str("drain_timeout_s = \"2m\"\nlog_format = \"json\"").unwrap();
        let s = Settings::resolve(file, false).unwrap();
        assert_eq!(s.drain_timeout, Duration::from_secs(120));
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(toml::from_str::<SettingsArgs>("log_format = \"xml\"").is_err());
    }

    #[test]
    fn loudest_n_comes_from_the_file_and_can_be_turned_off() {
        let file: SettingsArgs =
            toml::from_str("loudest_n = 0\nloudest_n_min_participants = 4").unwrap();
        let s = Settings::resolve(file, false).unwrap();
        assert_eq!((s.loudest_n, s.loudest_n_min_participants), (0, 4));
        let zero = SettingsArgs {
            loudest_n_min_participants: Some(0),
            ..Default::default()
        };
        let err = Settings::resolve(zero, false).err().unwrap().to_string();
        assert!(err.contains("loudest_n_min_participants"), "{err}");
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        assert!(toml::from_str::<SettingsArgs>("http_adr = \"x\"").is_err());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let args = SettingsArgs {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        };
        let err = Settings::resolve(args, false).err().unwrap().to_string();
        assert!(err.contains("database_url"), "{err}");
    }

    #[test]
    fn webhook_urls_need_a_secret_and_an_http_scheme() {
        let urls = |urls: &str, secret: Option<&str>| SettingsArgs {
            webhook_urls: Some(urls.into()),
            webhook_secret: secret.map(str::to_owned),
            ..Default::default()
        };
        let err = Settings::resolve(urls("http://a.example/hook", None), false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("webhook_secret"), "{err}");
        let err = Settings::resolve(urls("ftp://a.example/hook", Some("k")), false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("webhook_urls"), "{err}");
        let s = Settings::resolve(
            urls("http://a.example/hook, https://b.example/h", Some("k")),
            false,
        )
        .unwrap();
        let config = s.webhooks().unwrap();
        assert_eq!(config.urls.len(), 2);
        assert!(!format!("{s:?}").contains("\"k\""));
        assert!(
            Settings::resolve(SettingsArgs::default(), false)
                .unwrap()
                .webhooks()
                .is_none()
        );
    }

    #[test]
    fn redis_needs_postgres_and_node_ids_are_checked() {
        let sqlite_with_redis = SettingsArgs {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..Default::default()
        };
        let err = Settings::resolve(sqlite_with_redis, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("redis_url") && err.contains("postgres"),
            "{err}"
        );

        let postgres_with_redis = SettingsArgs {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            database_url: Some("postgres://confab@db/confab".into()),
            node_id: Some("node-1".into()),
            ..Default::default()
        };
        let s = Settings::resolve(postgres_with_redis, false).unwrap();
        assert_eq!(s.node_id, "node-1");

        let bad_url = SettingsArgs {
            redis_url: Some("http://not-redis".into()),
            database_url: Some("postgres://confab@db/confab".into()),
            ..Default::default()
        };
        let err = Settings::resolve(bad_url, false).err().unwrap().to_string();
        assert!(err.contains("redis_url"), "{err}");

        let bad_id = SettingsArgs {
            node_id: Some("no spaces".into()),
            ..Default::default()
        };
        let err = Settings::resolve(bad_id, false).err().unwrap().to_string();
        assert!(err.contains("node_id"), "{err}");

        let generated = Settings::resolve(SettingsArgs::default(), false).unwrap();
        assert!(crate::cluster::node_id::is_valid(&generated.node_id));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/confab"),
            "postgres://u:<redacted>@db:5432/confab"
        );
        assert_eq!(redact_url("sqlite://confab.db"), "sqlite://confab.db");
    }
}

//! The running server: shared state, start-up and shutdown.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use confab_sfu::{EngineConfig, EngineError, MediaEngine};
use confab_signaling::{CallBook, Limits};
use tokio::net::TcpListener;

use crate::auth::{JwtKeys, KeyError, generate_secret};
use crate::calls::{CallService, Outlets};
use crate::config::Settings;
use crate::delivery::{Delivery, Hub};
use crate::drain::{Drain, HISTORY_FLUSH_WAIT};
use crate::engine_metrics::{EngineMetrics, EngineMetricsHandle};
use crate::http::linger::LingeringListener;
use crate::ice::IceConfig;
use crate::media::MediaBridge;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::webhooks::{WebhookError, Webhooks};
use crate::writer::HistoryWriter;

/// Everything a handler may need, behind one `Arc` so cloning it per request is free.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub settings: Settings,
    pub store: Store,
    pub jwt: JwtKeys,
    pub calls: Arc<CallService>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub ice: IceConfig,
    pub writer: HistoryWriter,
    pub media: Arc<MediaBridge>,
    pub webhooks: Webhooks,
    pub drain: Arc<Drain>,
    /// When this run of the node started (`GET /admin/nodes`).
    pub started_at: time::OffsetDateTime,
    /// The address the HTTP server is bound to, once it is (`:0` resolved).
    pub bound_addr: std::sync::OnceLock<SocketAddr>,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("history store: {0}")]
    Store(#[from] StoreError),
    #[error("media engine: {0}")]
    Media(#[from] EngineError),
    #[error(transparent)]
    Webhooks(#[from] WebhookError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl AppState {
    /// Connects and migrates the store, builds every service and starts the background
    /// tasks (ring timer, history writer). Binding the listener is left to [`Server`].
    pub async fn start(mut settings: Settings) -> Result<AppState, StartError> {
        if settings.dev && settings.jwt_secret.is_none() && settings.jwt_public_key.is_none() {
            settings.jwt_secret = Some(generate_secret());
            tracing::warn!("--dev: using a generated JWT secret; tokens die with this process");
        }
        let jwt = JwtKeys::new(
            settings.jwt_secret.as_deref(),
            settings.jwt_public_key.as_deref(),
        )?;
        let store = Store::connect(&settings.database_url).await?;
        store.migrate().await?;

        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let delivery: Arc<dyn Delivery> = hub.clone();
        let writer = HistoryWriter::spawn(store.clone(), metrics.clone());
        let webhooks = Webhooks::start(settings.webhooks(), store.clone(), metrics.clone())?;
        let drain = Arc::new(Drain::new(metrics.node_draining.clone()));
        let book = CallBook::new(Limits {
            max_participants: settings.max_participants,
            ring_timeout: time::Duration::try_from(settings.ring_timeout)
                .unwrap_or(time::Duration::seconds(45)),
        });
        let outlets = Outlets {
            store: store.clone(),
            writer: writer.clone(),
            metrics: metrics.clone(),
            hub: hub.clone(),
            delivery: delivery.clone(),
            webhooks: webhooks.clone(),
        };
        let (calls, roster) =
            CallService::new(book, outlets, settings.disconnect_grace, drain.clone());
        let recovered = calls.recover_interrupted_calls().await?;
        if recovered > 0 {
            tracing::warn!(
                count = recovered,
                "calls live at the last shutdown were marked failed"
            );
        }
        tokio::spawn(calls.clone().run_ring_timer());

        let announced = crate::announce::announce_ip(settings.rtc_bind_ip, settings.rtc_public_ip)
            .map_err(|e| StartError::Media(EngineError::Config(e.to_string())))?;
        let engine = MediaEngine::start(EngineConfig {
            workers: settings.effective_media_workers(),
            bind_ip: settings.rtc_bind_ip,
            udp_port: settings.rtc_udp_port,
            public_ip: Some(announced),
            quality_interval: settings.quality_interval,
            loudest_n: settings.loudest_n,
            loudest_n_min_participants: settings.loudest_n_min_participants,
        })?;
        tracing::info!(addrs = ?engine.announced_addrs(), "media workers listening");
        let events = engine.take_events().ok_or_else(|| {
            StartError::Media(EngineError::Config("engine events already taken".into()))
        })?;
        let media = MediaBridge::new(
            engine,
            calls.clone(),
            hub.clone(),
            delivery,
            metrics.clone(),
            writer.clone(),
            settings.quality_interval,
        );
        media.spawn(roster, events);
        let engine_metrics = EngineMetrics::new();
        metrics
            .registry()
            .register(Box::new(EngineMetricsHandle(engine_metrics.clone())))
            .map_err(|e| StartError::Media(EngineError::Config(e.to_string())))?;
        tokio::spawn(engine_metrics.poll(media.engine().clone()));

        let ice = IceConfig {
            stun_urls: settings.stun_urls.clone(),
            turn_urls: settings.turn_urls.clone(),
            turn_secret: settings.turn_secret.clone(),
            ttl: settings.turn_ttl,
        };
        Ok(AppState(Arc::new(AppInner {
            settings,
            store,
            jwt,
            calls,
            hub,
            metrics,
            ice,
            writer,
            media,
            webhooks,
            drain,
            started_at: crate::calls::now_ms(),
            bound_addr: std::sync::OnceLock::new(),
        })))
    }
}

/// How long shutdown waits for webhook receivers to take what is queued.
const WEBHOOK_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);
/// How long requests in flight may still take once the server stops.
const HTTP_STOP_WAIT: Duration = Duration::from_secs(10);
/// How long the media workers get to close their peer connections.
const MEDIA_STOP_WAIT: Duration = Duration::from_secs(5);

/// A bound, not yet serving, HTTP server: binding first lets `:0` report its real port.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    pub async fn bind(state: AppState) -> Result<Server, StartError> {
        let addr = state.settings.http_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        if let Ok(bound) = listener.local_addr() {
            let _ = state.bound_addr.set(bound);
        }
        Ok(Server { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.settings.http_addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `terminate` resolves, drains the node (contract section 10), then stops
    /// as [`Server::run`] does: what SIGTERM does to `confab serve`.
    pub async fn run_until_terminated(
        self,
        terminate: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        self.run(async move {
            terminate.await;
            crate::drain::start(&state);
            state.drain.finished().await;
        })
        .await
    }

    /// Serves until `shutdown` resolves, then stops: no new connections, requests in flight
    /// answered (for at most [`HTTP_STOP_WAIT`]), media workers stopped, the history writer's
    /// queue written (for at most [`HISTORY_FLUSH_WAIT`]), queued webhooks persisted (receivers
    /// get [`WEBHOOK_FLUSH`] to take them), the store closed. Live calls are not
    /// ended here; the next start records them as failed.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = crate::http::router(self.state.clone());
        // Signaling is small messages in quick succession (an answer, the events it causes, the
        // next offer): with Nagle's algorithm each one after the first waited for the client's
        // delayed ACK, about 40 ms on Linux, before it left.
        // Each connection closes with a lingering close, so that a client still sending a body
        // the server refused reads the answer instead of a reset.
        let listener = LingeringListener(self.listener).tap_io(|stream| {
            if let Err(e) = stream.tcp().set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set on a connection");
            }
        });
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stopping.send(());
        })
        .into_future();
        // A client that never finishes its request must not hold the process.
        let result = tokio::select! {
            result = serving => result,
            _ = async {
                if stopped.await.is_ok() {
                    tokio::time::sleep(HTTP_STOP_WAIT).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!("requests still in flight after {HTTP_STOP_WAIT:?}; stopping anyway");
                Ok(())
            }
        };
        let state = &self.state;
        if tokio::time::timeout(MEDIA_STOP_WAIT, state.media.engine().shutdown())
            .await
            .is_err()
        {
            tracing::warn!("media workers did not stop within {MEDIA_STOP_WAIT:?}");
        }
        let flushed = state
            .webhooks
            .flush(tokio::time::Instant::now() + WEBHOOK_FLUSH)
            .await;
        if flushed.pending.is_some_and(|n| n > 0) || !flushed.persisted {
            tracing::info!(?flushed, "webhooks left for the next start");
        }
        state.webhooks.stop();
        match state.writer.close(HISTORY_FLUSH_WAIT).await {
            Ok(()) => tracing::debug!("history writer finished"),
            Err(e) => tracing::error!(lost = e.pending, "history writes lost at shutdown: {e}"),
        }
        state.store.close().await;
        result
    }
}

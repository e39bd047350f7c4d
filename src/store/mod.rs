//! The history store: conversations, call snapshots, media events, quality samples and the
//! webhook outbox, kept in SQLite or PostgreSQL.
//!
//! Both backends run the same SQL text. It sticks to what both dialects share: numbered `$N`
//! placeholders (sqlx's SQLite driver maps `$N` to the N-th bound value), `ON CONFLICT … DO
//! UPDATE … WHERE`, row-value comparisons and CTEs. What genuinely differs lives elsewhere: the
//! DDL in `migrations/{sqlite,postgres}`, and the column encodings of times and call ids in
//! `DbTime` and `DbUuid`. Each method runs its body through `with_pool!`, which expands it
//! once per backend, so no query is written twice.

mod admin_actions;
mod calls;
mod conversations;
mod history;
mod migrate;
mod outbox;
mod quality;
mod types;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use admin_actions::{AdminAction, StoredAdminAction};
pub use calls::MediaEvent;
pub use history::{
    CallSummary, Cursor, HistoryPage, HistoryQuery, InvalidCursor, StatsQuery, StatsRows,
};
pub use outbox::{NewOutboxRow, OutboxRow};
pub use quality::{QualityAverages, QualityDirection, QualitySample};

/// Runs `$body` with `$pool` bound to whichever pool the store holds. The body is expanded
/// once per backend, so the same query text is type-checked and bound against each driver.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Only the scheme is kept: the rest of a database URL may hold a password.
    #[error("unsupported database URL scheme {scheme:?}: expected sqlite://… or postgres://…")]
    UnsupportedUrl { scheme: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds something this version cannot read back, e.g. an enum name it does not know:
    /// a newer server wrote it, or someone edited the database by hand.
    #[error("unreadable value {value:?} in column {column}")]
    Corrupt { column: &'static str, value: String },
}

/// A store fault as a client sees it: `INTERNAL`, naming the store and none of its internals
/// (logged here, once).
impl From<StoreError> for confab_signaling::SignalingError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "history store failed");
        confab_signaling::SignalingError::new(
            confab_signaling::ErrorCode::Internal,
            "the history store is unavailable",
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle to the history store; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

impl Store {
    /// Opens a pool for `sqlite://path` (the file is created if missing) or
    /// `postgres://…`/`postgresql://…`, and fails at once when the database is unreachable so a
    /// misconfigured server stops at startup instead of at its first call.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                // WAL lets history reads proceed while the writer appends; NORMAL is durable
                // across application crashes, which is what call history needs.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            Backend::Sqlite(SqlitePoolOptions::new().connect_with(options).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            Backend::Postgres(PgPoolOptions::new().connect_with(options).await?)
        } else {
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            return Err(StoreError::UnsupportedUrl {
                scheme: scheme.to_owned(),
            });
        };
        Ok(Store { backend })
    }

    /// Applies the migrations compiled into the binary; already applied ones are skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => migrate::sqlite().await?.run(pool).await?,
            Backend::Postgres(pool) => migrate::postgres().await?.run(pool).await?,
        }
        Ok(())
    }

    /// Readiness: succeeds when a pooled connection answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool; later calls fail. Committed writes do not depend on it: in SQLite they
    /// may still sit in the write-ahead log, which the next open replays.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

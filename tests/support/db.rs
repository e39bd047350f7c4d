//! Throwaway databases for tests: a SQLite file in a fresh directory, or a fresh schema in the
//! PostgreSQL server named by `CONFAB_TEST_POSTGRES_URL`.
//!
//! Every test gets its own database, so tests run in parallel without seeing each other's rows.

// Several test crates include this file and each uses only part of it.
#![allow(dead_code)]

use confab::store::Store;
use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;

/// The PostgreSQL server for tests, e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_URL_VAR: &str = "CONFAB_TEST_POSTGRES_URL";

/// Generates, from one `async fn name(db: &TestDb)` per test, a `sqlite` module running each on
/// SQLite and a `postgres` module running each on PostgreSQL. The PostgreSQL tests are
/// `#[ignore]`d so that a plain `cargo test` needs no server; `cargo test -- --include-ignored`
/// with `CONFAB_TEST_POSTGRES_URL` set runs both. `TestDb` must be in scope where it is used.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($db:ident: &TestDb) $body:block)+) => {
        $(async fn $name($db: &TestDb) $body)+

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::sqlite();
                    super::$name(&db).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set CONFAB_TEST_POSTGRES_URL (see .ci/run)"]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            )+
        }
    };
}

pub struct TestDb {
    /// What `Store::connect` (or `CONFAB_DATABASE_URL`) takes.
    pub url: String,
    home: Home,
}

enum Home {
    /// Keeps the directory, and so the database file, alive until the test ends.
    Sqlite(TempDir),
    /// A schema of its own; dropped with the `TestDb`.
    Postgres { server_url: String, schema: String },
}

impl TestDb {
    /// A database file that does not exist yet, in a new temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("confab.db").display());
        TestDb {
            url,
            home: Home::Sqlite(dir),
        }
    }

    /// A new, empty schema `confab_test_<uuid>` on the server of `CONFAB_TEST_POSTGRES_URL`;
    /// every connection made from `url` uses it. Panics when the variable is unset or the
    /// server unreachable: a PostgreSQL test that quietly passes without PostgreSQL proves
    /// nothing.
    pub async fn postgres() -> TestDb {
        let server_url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL_VAR} is not set: the PostgreSQL tests need a server, e.g. \
                 {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/test (see .ci/run)"
            )
        });
        let schema = format!("confab_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {server_url}: {e}"));
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
        let _ = conn.close().await;

        // The libpq `options` parameter sets search_path for every session opened from this
        // URL, so the store's unqualified table names land in the test's schema.
        let separator = if server_url.contains('?') { '&' } else { '?' };
        let url = format!("{server_url}{separator}options=-c%20search_path%3D{schema}");
        let db = TestDb {
            url,
            home: Home::Postgres { server_url, schema },
        };
        db.assert_isolated().await;
        db
    }

    /// Connects and applies the migrations.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url));
        store.migrate().await.expect("migrations apply");
        store
    }

    /// `"sqlite"` or `"postgres"`, as `Store::backend_name` says it.
    pub fn backend_name(&self) -> &'static str {
        match self.home {
            Home::Sqlite(_) => "sqlite",
            Home::Postgres { .. } => "postgres",
        }
    }

    async fn assert_isolated(&self) {
        let Home::Postgres { schema, .. } = &self.home else {
            return;
        };
        let mut conn = PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url));
        let current: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut conn)
            .await
            .expect("query current_schema()");
        assert_eq!(
            current.as_deref(),
            Some(schema.as_str()),
            "search_path from the URL"
        );
        let _ = conn.close().await;
    }
}

impl Drop for TestDb {
    /// Drops the PostgreSQL schema, best effort. Drop cannot await, and the test's runtime may be
    /// unwinding, so the cleanup runs on a thread with a runtime of its own.
    fn drop(&mut self) {
        let Home::Postgres { server_url, schema } = &self.home else {
            return;
        };
        let server_url = server_url.clone();
        let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        let cleanup = std::thread::spawn(
            move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let mut conn = PgConnection::connect(&server_url).await?;
                    // A connection of a failed test may still hold locks in the schema; give up
                    // rather than hang the test run.
                    conn.execute("SET lock_timeout = '5s'").await?;
                    conn.execute(drop_schema.as_str()).await?;
                    conn.close().await?;
                    Ok(())
                })
            },
        );
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {schema}: {e}"),
            Err(_) => eprintln!("dropping test schema {schema} panicked"),
        }
    }
}

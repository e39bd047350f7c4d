//! The migrations, compiled into the binary.
//!
//! `sqlx::migrate!` needs sqlx's `macros` feature, which the workspace does not enable; this
//! module does the same job with `include_str!`. Versions, descriptions and checksums are
//! derived exactly as sqlx derives them from a directory, so databases migrated by either
//! way (or by `sqlx migrate run`) agree. A new migration file needs one more line below; a
//! unit test fails until it is there.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// `(file name, SQL)` of each migration, as `<VERSION>_<DESCRIPTION>.sql`.
type Files = &'static [(&'static str, &'static str)];

macro_rules! embed {
    ($dir:literal: $($file:literal),+ $(,)?) => {
        &[$(($file, include_str!(concat!("../../migrations/", $dir, "/", $file)))),+]
    };
}

const SQLITE: Files =
    embed!("sqlite": "0001_init.sql", "0002_webhooks.sql", "0003_admin_actions.sql");
const POSTGRES: Files =
    embed!("postgres": "0001_init.sql", "0002_webhooks.sql", "0003_admin_actions.sql");

pub(super) async fn sqlite() -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(SQLITE)).await
}

pub(super) async fn postgres() -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(POSTGRES)).await
}

#[derive(Debug)]
struct Embedded(Files);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move { migrations(self.0) })
    }
}

fn migrations(files: Files) -> Result<Vec<Migration>, BoxDynError> {
    let mut migrations = files
        .iter()
        .map(|&(file, sql)| {
            let (version, rest) = file
                .split_once('_')
                .ok_or_else(|| format!("migration {file:?} is not named <VERSION>_<NAME>.sql"))?;
            let version: i64 = version
                .parse()
                .map_err(|_| format!("migration {file:?} has no integer version"))?;
            let kind = MigrationType::from_filename(rest);
            let description = rest.trim_end_matches(kind.suffix()).replace('_', " ");
            let no_tx = sql.starts_with("-- no-transaction");
            Ok(Migration::new(
                version,
                Cow::Owned(description),
                kind,
                Cow::Borrowed(sql),
                no_tx,
            ))
        })
        .collect::<Result<Vec<_>, BoxDynError>>()?;
    migrations.sort_by_key(|m| m.version);
    Ok(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_on_disk(dir: &str) -> Vec<String> {
        let path = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("reading {path}: {e}"))
            .map(|entry| entry.expect("directory entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    fn embedded(files: Files) -> Vec<String> {
        files.iter().map(|(name, _)| name.to_string()).collect()
    }

    #[test]
    fn every_migration_file_is_embedded() {
        assert_eq!(embedded(SQLITE), files_on_disk("sqlite"));
        assert_eq!(embedded(POSTGRES), files_on_disk("postgres"));
    }

    #[test]
    fn both_backends_have_the_same_versions() {
        let versions = |files| {
            migrations(files)
                .expect("valid names")
                .iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(SQLITE), versions(POSTGRES));
        assert_eq!(versions(SQLITE)[0], (1, "init".to_owned()));
    }
}

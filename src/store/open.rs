//! Opening the configured store: the in-memory map, an SQLite file in the data directory,
//! or a PostgreSQL database; applying migrations; refusing what cannot be used, with a message
//! that names the file or server and says what to do.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::SessionStore;
use super::db_file::DatabaseFile;
use super::keys::KeyStore;
use super::memory::MemoryStore;
use super::sql::{Pools, Readers, SqlStore, SqliteFile};
use crate::config::{StorageConfig, StoreKind, SyncMode};

/// The schema migrations for SQLite, embedded in the binary.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
/// The schema migrations for PostgreSQL, embedded in the binary.
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The SQLite database's file name inside the data directory.
pub const SQLITE_FILE: &str = "contextd.db";
/// The lock file that keeps a second contextd off the same data directory.
pub const LOCK_FILE: &str = "contextd.lock";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory is unusable.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {0} is in use by another contextd (it holds {LOCK_FILE}); stop it, or choose another --data-dir; several replicas share one database with --store postgres://…"
    )]
    Locked(PathBuf),
    /// The database file is not an SQLite database.
    #[error(
        "{path} is not a usable SQLite database ({reason}); move it away or choose another --data-dir"
    )]
    NotSqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// The database cannot be reached.
    #[error("cannot connect to the database at {target}: {reason}")]
    Unreachable {
        /// Where (without a password).
        target: String,
        /// Why.
        reason: String,
    },
    /// The schema is newer than this binary.
    #[error(
        "the database at {target} has schema version {version}, which this contextd does not know (it knows up to {known}); run a newer contextd"
    )]
    NewerSchema {
        /// Where.
        target: String,
        /// The unknown version found.
        version: i64,
        /// The newest version this binary has.
        known: i64,
    },
    /// Migrating failed.
    #[error("cannot migrate the database at {target}: {reason}")]
    Migrate {
        /// Where.
        target: String,
        /// Why.
        reason: String,
    },
}

/// An open store, and what closes it.
pub struct OpenStore {
    /// The store.
    pub store: Arc<dyn SessionStore>,
    /// Its API keys (beside the sessions, so replicas share them).
    pub keys: Arc<dyn KeyStore>,
    /// The SQL store, when there is one, for closing its pools at shutdown.
    pub sql: Option<Arc<SqlStore>>,
    /// Held while the process uses the data directory.
    _lock: Option<File>,
}

impl OpenStore {
    /// A store that needs no closing, keeping sessions and keys.
    pub fn of<S: SessionStore + KeyStore + 'static>(store: Arc<S>) -> Self {
        Self {
            store: store.clone(),
            keys: store,
            sql: None,
            _lock: None,
        }
    }

    /// Closes database connections (a no-op for the memory store).
    pub async fn close(&self) {
        if let Some(sql) = &self.sql {
            sql.close().await;
        }
    }
}

/// How much one group commit may write (`storage.commit_batch_*`).
fn batch_limits(settings: &StorageConfig) -> crate::store::sql::BatchLimits {
    crate::store::sql::BatchLimits {
        max_turns: settings.commit_batch_max_turns.max(1),
        max_bytes: settings.commit_batch_max_bytes.max(1),
    }
}

/// Opens the store `kind` with these settings.
pub async fn open_store(
    kind: &StoreKind,
    data_dir: &Path,
    settings: &StorageConfig,
) -> Result<OpenStore, OpenError> {
    match kind {
        StoreKind::Memory => Ok(OpenStore::of(Arc::new(MemoryStore::new()))),
        StoreKind::Sqlite => open_sqlite(data_dir, settings).await,
        StoreKind::Postgres(url) => open_postgres(url, settings).await,
    }
}

async fn open_sqlite(data_dir: &Path, settings: &StorageConfig) -> Result<OpenStore, OpenError> {
    let dir_error = |source| OpenError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(dir_error)?;
    let lock = File::create(data_dir.join(LOCK_FILE)).map_err(dir_error)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(OpenError::Locked(data_dir.to_path_buf()));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(dir_error(e)),
    }

    let path = data_dir.join(SQLITE_FILE);
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match settings.sqlite_synchronous {
            SyncMode::Full => SqliteSynchronous::Full,
            SyncMode::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(Duration::from_millis(settings.connect_timeout_ms));
    let not_sqlite = |e: sqlx::Error| OpenError::NotSqlite {
        path: path.clone(),
        reason: e.to_string(),
    };
    // SQLite connections are kept for the process's life: closing one (sqlx's default is
    // after 30 minutes) gains nothing for a local file and drops its page cache.
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .connect_with(options.clone())
        .await
        .map_err(not_sqlite)?;
    // Reading the schema proves the file is a database before anything writes to it.
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .execute(&write)
        .await
        .map_err(not_sqlite)?;
    migrate(&SQLITE_MIGRATIONS, &write, &path.display().to_string()).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(settings.max_connections.max(1))
        .max_lifetime(None)
        .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .connect_with(options.read_only(true))
        .await
        .map_err(not_sqlite)?;
    let file = Arc::new(DatabaseFile::open(&path).map_err(|e| OpenError::NotSqlite {
        path: path.clone(),
        reason: e.to_string(),
    })?);
    DatabaseFile::watch(Arc::downgrade(&file));
    let sql = Arc::new(SqlStore::new(
        Pools::Sqlite {
            commits: SqliteFile {
                path: path.clone(),
                synchronous: settings.sqlite_synchronous,
                busy_timeout: Duration::from_millis(settings.connect_timeout_ms),
            },
            write,
            readers: Readers::new(
                path.clone(),
                settings.max_connections as usize,
                Duration::from_millis(settings.connect_timeout_ms),
            ),
            read,
        },
        Some(file),
        batch_limits(settings),
        settings.cache_bytes,
    ));
    tracing::info!(path = %path.display(), "store: sqlite");
    Ok(OpenStore {
        store: sql.clone(),
        keys: sql.clone(),
        sql: Some(sql),
        _lock: Some(lock),
    })
}

async fn open_postgres(url: &str, settings: &StorageConfig) -> Result<OpenStore, OpenError> {
    let target = redact(url);
    let unreachable = |e: sqlx::Error| OpenError::Unreachable {
        target: target.clone(),
        reason: e.to_string(),
    };
    let options = PgConnectOptions::from_str(url).map_err(unreachable)?;
    let timeout = Duration::from_millis(settings.connect_timeout_ms);
    // sqlx tests every connection as it goes back to the pool (a round trip); testing it
    // again as it is taken would be a second one before every statement. A connection that
    // breaks while idle fails its next statement, answered UNAVAILABLE like any lost database.
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections.max(1))
        .test_before_acquire(false)
        .acquire_timeout(timeout)
        .connect_with(options.clone())
        .await
        .map_err(unreachable)?;
    migrate(&POSTGRES_MIGRATIONS, &pool, &target).await?;
    let locks = PgPoolOptions::new()
        .max_connections(settings.max_lease_connections.max(1))
        .test_before_acquire(false)
        .min_connections(0)
        .acquire_timeout(timeout)
        .connect_lazy_with(options);
    let sql = Arc::new(SqlStore::new(
        Pools::Postgres { pool, locks },
        None,
        batch_limits(settings),
        settings.cache_bytes,
    ));
    tracing::info!(database = %target, "store: postgres");
    Ok(OpenStore {
        store: sql.clone(),
        keys: sql.clone(),
        sql: Some(sql),
        _lock: None,
    })
}

async fn migrate<DB>(
    migrator: &Migrator,
    pool: &sqlx::Pool<DB>,
    target: &str,
) -> Result<(), OpenError>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
{
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    migrator.run(pool).await.map_err(|e| match e {
        MigrateError::VersionMissing(version) => OpenError::NewerSchema {
            target: target.to_string(),
            version,
            known,
        },
        other => OpenError::Migrate {
            target: target.to_string(),
            reason: other.to_string(),
        },
    })
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kinds() {
        assert_eq!("memory".parse(), Ok(StoreKind::Memory));
        assert_eq!("sqlite".parse(), Ok(StoreKind::Sqlite));
        assert_eq!(
            "postgres://u@h:5/db".parse(),
            Ok(StoreKind::Postgres("postgres://u@h:5/db".into()))
        );
        let err = "mysql://x".parse::<StoreKind>().unwrap_err();
        assert!(err.contains("unknown store \"mysql://x\""), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/contextd"),
            "postgres://app@db:5432/contextd"
        );
        assert_eq!(redact("postgres://db/contextd"), "postgres://db/contextd");
    }
}

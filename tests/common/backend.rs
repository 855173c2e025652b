//! The durable stores the store suite runs on: SQLite in a temporary data directory, and
//! PostgreSQL in a fresh database of a throwaway cluster.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use contextd::config::Config;

use super::postgres::Cluster;
use super::test_config;

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "contextd-test-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One durable store for a test.
pub enum Backend {
    /// SQLite in `data_dir`.
    Sqlite {
        /// The data directory.
        data_dir: TempDir,
        /// With `storage.cache_bytes = 0`: every read goes to the database.
        uncached: bool,
    },
    /// A fresh PostgreSQL database.
    Postgres {
        /// Its URL.
        url: String,
        /// With `storage.cache_bytes = 0`: every read goes to the database.
        uncached: bool,
    },
}

impl Backend {
    /// SQLite in a new data directory.
    pub fn sqlite() -> Self {
        Backend::Sqlite {
            data_dir: TempDir::new("sqlite"),
            uncached: false,
        }
    }

    /// SQLite in a new data directory, without its session cache.
    pub fn sqlite_uncached() -> Self {
        Backend::Sqlite {
            data_dir: TempDir::new("sqlite"),
            uncached: true,
        }
    }

    /// A new database in the shared test cluster.
    pub fn postgres() -> Self {
        Backend::Postgres {
            url: Cluster::shared().create_database(),
            uncached: false,
        }
    }

    /// A new database in the shared test cluster, without the session cache.
    pub fn postgres_uncached() -> Self {
        Backend::Postgres {
            url: Cluster::shared().create_database(),
            uncached: true,
        }
    }

    /// Whether several contextd processes may share this store.
    pub fn shared_by_replicas(&self) -> bool {
        matches!(self, Backend::Postgres { .. })
    }

    /// The test configuration on this store.
    pub fn config(&self) -> Config {
        let mut config = test_config();
        match self {
            Backend::Sqlite { data_dir, uncached } => {
                config.store = "sqlite".into();
                config.data_dir = data_dir.path().to_path_buf();
                if *uncached {
                    config.storage.cache_bytes = 0;
                }
            }
            Backend::Postgres { url, uncached } => {
                config.store = url.clone();
                if *uncached {
                    config.storage.cache_bytes = 0;
                }
            }
        }
        config
    }

    /// `--store`/`--data-dir` arguments for the binary.
    pub fn args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite { data_dir, uncached } => {
                let mut args = vec![
                    "--store".into(),
                    "sqlite".into(),
                    "--data-dir".into(),
                    data_dir.path().display().to_string(),
                ];
                if *uncached {
                    let file = data_dir.path().join("cache-off.toml");
                    std::fs::write(&file, "[storage]\ncache_bytes = 0\n").expect("config file");
                    args.extend(["--config".into(), file.display().to_string()]);
                }
                args
            }
            Backend::Postgres { url, uncached } => {
                let mut args = vec!["--store".into(), url.clone()];
                if *uncached {
                    let file = std::env::temp_dir().join(format!(
                        "contextd-test-cache-off-{}.toml",
                        std::process::id()
                    ));
                    std::fs::write(&file, "[storage]\ncache_bytes = 0\n").expect("config file");
                    args.extend(["--config".into(), file.display().to_string()]);
                }
                args
            }
        }
    }

    /// Counts rows of `table` (optionally of one session), reading the database directly.
    pub async fn count_rows(&self, table: &str, session_id: Option<&str>) -> i64 {
        let sql = match session_id {
            Some(_) => format!("SELECT count(*) FROM {table} WHERE session_id = $1"),
            None => format!("SELECT count(*) FROM {table}"),
        };
        match self {
            Backend::Sqlite { data_dir, .. } => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(data_dir.path().join("contextd.db"))
                    .read_only(true);
                let mut conn = sqlx::ConnectOptions::connect(&options)
                    .await
                    .expect("open the SQLite file");
                let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
                let query = match session_id {
                    Some(id) => query.bind(id.to_string()),
                    None => query,
                };
                query.fetch_one(&mut conn).await.expect("count rows")
            }
            Backend::Postgres { url, .. } => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
                    .await
                    .expect("connect to PostgreSQL");
                let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
                let query = match session_id {
                    Some(id) => query.bind(id.to_string()),
                    None => query,
                };
                query.fetch_one(&mut conn).await.expect("count rows")
            }
        }
    }
}

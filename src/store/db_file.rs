//! The embedded database file's identity, watched while contextd runs.
//!
//! SQLite keeps writing into a database file that was removed (or replaced by another file)
//! under it: the open descriptors still point at the old inode, every write succeeds, and all
//! of it is gone at the next start. So the store remembers which file it opened (device and
//! inode) and checks before every write, on a timer and after a failed write. Once the file
//! is gone or replaced the store is *lost*: every operation answers UNAVAILABLE, saying so,
//! and an ERROR line names the path, until contextd is restarted and opens the file that is
//! there now.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::StoreError;

/// How often an idle server checks the file (writes check it every time anyway).
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The database file a store opened.
#[derive(Debug)]
pub(crate) struct DatabaseFile {
    path: PathBuf,
    /// Held open so that the inode cannot be freed and reused by another file while the
    /// store runs (a reused inode number would look like the same file).
    _open: std::fs::File,
    device: u64,
    inode: u64,
    lost: AtomicBool,
}

impl DatabaseFile {
    /// Remembers the file at `path` as it is now.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let open = std::fs::File::open(path)?;
        let metadata = open.metadata()?;
        Ok(Self {
            path: path.to_path_buf(),
            _open: open,
            device: metadata.dev(),
            inode: metadata.ino(),
            lost: AtomicBool::new(false),
        })
    }

    /// `Err` once the file is known to be gone or replaced (no system call).
    pub(crate) fn ensure_present(&self) -> Result<(), StoreError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(lost());
        }
        Ok(())
    }

    /// Checks the file itself (one `stat`): `Err` if it is gone or another file now.
    pub(crate) fn verify(&self) -> Result<(), StoreError> {
        self.ensure_present()?;
        let what = match std::fs::metadata(&self.path) {
            Ok(m) if m.dev() == self.device && m.ino() == self.inode => return Ok(()),
            Ok(_) => "replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "removed",
            // The directory cannot be read now (permissions, I/O): not proof that the file
            // is gone, so the write goes ahead and meets the real error, if any.
            Err(_) => return Ok(()),
        };
        if !self.lost.swap(true, Ordering::AcqRel) {
            tracing::error!(
                path = %self.path.display(),
                "the database file was {what} while contextd was running; refusing every request until contextd is restarted"
            );
        }
        Err(lost())
    }

    /// Checks the file every few seconds for as long as `file` lives.
    pub(crate) fn watch(file: Weak<DatabaseFile>) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CHECK_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(file) = file.upgrade() else { return };
                if file.verify().is_err() {
                    return;
                }
            }
        });
    }
}

fn lost() -> StoreError {
    StoreError::Unavailable(
        "the database file was removed or replaced while contextd was running; restart contextd"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_file_is_lost_for_good() {
        let dir = std::env::temp_dir().join(format!("contextd-dbfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        std::fs::write(&path, b"one").unwrap();
        let file = DatabaseFile::open(&path).unwrap();
        assert!(file.verify().is_ok());
        // Replaced: a new inode under the same name.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"two").unwrap();
        let error = file.verify().unwrap_err().to_string();
        assert!(error.contains("removed or replaced"), "{error}");
        assert!(!error.contains(dir.to_str().unwrap()), "no paths: {error}");
        // Lost stays lost, even without a system call.
        assert!(file.ensure_present().is_err());

        let other = dir.join("db2");
        std::fs::write(&other, b"x").unwrap();
        let file = DatabaseFile::open(&other).unwrap();
        std::fs::remove_file(&other).unwrap();
        assert!(file.verify().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The runtime's crash-safe state under `storage.state_dir`: one record per sandbox (metadata,
//! renewed expiry, what was mounted, and what Berth created for it), plus volumes waiting to be
//! removed once no sandbox uses them. Metadata is never read back from container labels (images
//! add labels of their own). Credentials are never stored.
//!
//! A record is written *before* Docker objects are made (phase `Creating`, with the volume
//! nonces and staging names it is about to use), so a crash mid-create leaves enough behind for
//! startup reconciliation to roll it back (ARCHITECTURE.md, "Record before objects").

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_core::model::PlatformSpec;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::state::SharedState;

const SANDBOXES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sandboxes");
const VOLUMES_TO_REMOVE: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("volumes_to_remove");
const SETTINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("settings");
/// The server's secret for keying ossfs mounts (see `ossfs::OssfsKey`).
const OSSFS_SALT: &str = "ossfs_salt";

/// Where a create is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Objects are being made; a record still in this phase at startup is rolled back.
    Creating,
    /// The container runs (or ran).
    Created,
}

/// A named volume Berth created, identified by the nonce label it was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedVolume {
    /// Docker volume name.
    pub name: String,
    /// The value of the `berth.nonce` label Berth set; only a volume carrying it is Berth's.
    pub nonce: String,
    /// Whether to remove it once its creator is deleted and no sandbox uses it.
    pub delete_on_termination: bool,
}

/// A mounted volume as stored: what is reported, plus what Berth needs to release it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVolume {
    /// The report (never a credential).
    #[serde(flatten)]
    pub report: berth_core::wire::VolumeStatus,
    /// The Docker named volume it uses, if any (reference counting).
    pub docker_volume: Option<String>,
    /// Whether it has a staging mount under `<state_dir>/mounts/<id>/<name>`.
    pub staged: bool,
    /// The shared ossfs mount it uses (reference counting: a mount is released when no record
    /// names its key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ossfs_key: Option<crate::ossfs::OssfsKey>,
}

/// One sandbox's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSandbox {
    /// Sandbox id.
    pub id: String,
    /// Create progress.
    pub phase: Phase,
    /// Image reference.
    pub image: String,
    /// Platform constraint.
    pub platform: Option<PlatformSpec>,
    /// Entry process.
    pub entrypoint: Vec<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry (renewals update it).
    pub expires_at: Option<DateTime<Utc>>,
    /// Mounted volumes.
    pub volumes: Vec<StoredVolume>,
    /// Volumes Berth created for this sandbox.
    pub created_volumes: Vec<CreatedVolume>,
    /// Per-sandbox volumes (nfs) removed with the sandbox.
    pub sandbox_volumes: Vec<String>,
    /// Published ports: container port → host port.
    pub ports: BTreeMap<u16, u16>,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("state store {context}: {source}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: Box<redb::Error>,
    },
    /// A record does not decode (written by an incompatible version, or damaged).
    #[error("state store record {key}: {source}")]
    Decode {
        /// Which record.
        key: String,
        /// The error.
        source: serde_json::Error,
    },
    /// The writer thread is gone (it panicked, or the store is closing).
    #[error("state store writer stopped")]
    WriterStopped,
}

fn db_error(context: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
    move |e| StoreError::Database {
        context,
        source: Box::new(e),
    }
}

fn into_redb<E: Into<redb::Error>>(e: E) -> redb::Error {
    e.into()
}

/// One piece of work for the writer thread.
type Job = Box<dyn FnOnce(&Writer) + Send>;

/// The store: the database on disk, written by one dedicated thread so a commit (an fsync)
/// never blocks an async worker, and mirrored into the runtime's [`SharedState`] by that thread
/// right after each commit — so memory never shows what the disk does not hold, and mirror
/// updates happen in commit order. Reads of records come from the mirror. The process holds
/// the database's lock, so nobody else writes it.
#[derive(Debug)]
pub struct Store {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    state: Arc<SharedState>,
    ossfs_salt: Vec<u8>,
    #[cfg(feature = "test-hooks")]
    hold: Arc<std::sync::Mutex<Option<HeldCommit>>>,
}

/// What the writer thread owns.
struct Writer {
    db: Database,
    state: Arc<SharedState>,
    #[cfg(feature = "test-hooks")]
    hold: Arc<std::sync::Mutex<Option<HeldCommit>>>,
}

impl Writer {
    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        write(&self.db, f, || {
            #[cfg(feature = "test-hooks")]
            self.wait_if_held();
        })
    }

    #[cfg(feature = "test-hooks")]
    fn wait_if_held(&self) {
        let held = self
            .hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(held) = held {
            let _ = held.entered.send(());
            // Released, or the holder was dropped.
            let _ = held.release.recv();
        }
    }
}

/// One write transaction; `before_commit` runs between the writes and the commit.
fn write(
    db: &Database,
    f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    before_commit: impl FnOnce(),
) -> Result<(), StoreError> {
    let tx = db
        .begin_write()
        .map_err(into_redb)
        .map_err(db_error("beginning a write"))?;
    f(&tx).map_err(db_error("writing"))?;
    before_commit();
    tx.commit()
        .map_err(into_redb)
        .map_err(db_error("committing"))
}

/// Every value of a table, decoded.
fn read_table<T: serde::de::DeserializeOwned>(
    db: &Database,
    definition: TableDefinition<'_, &str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let tx = db
        .begin_read()
        .map_err(into_redb)
        .map_err(db_error("beginning a read"))?;
    let table = tx
        .open_table(definition)
        .map_err(into_redb)
        .map_err(db_error("opening table"))?;
    let mut out = Vec::new();
    for entry in table
        .iter()
        .map_err(into_redb)
        .map_err(db_error("listing"))?
    {
        let (key, value) = entry.map_err(into_redb).map_err(db_error("listing"))?;
        let decoded =
            serde_json::from_slice(value.value()).map_err(|source| StoreError::Decode {
                key: key.value().to_owned(),
                source,
            })?;
        out.push(decoded);
    }
    Ok(out)
}

/// A commit held by the test hook: the writer signals `entered` and waits on `release`.
#[cfg(feature = "test-hooks")]
#[derive(Debug)]
struct HeldCommit {
    entered: tokio::sync::oneshot::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

/// The test side of a held commit (see [`Store::hold_next_commit`]).
#[cfg(feature = "test-hooks")]
#[derive(Debug)]
pub struct CommitHold {
    entered: Option<tokio::sync::oneshot::Receiver<()>>,
    release: std::sync::mpsc::Sender<()>,
}

#[cfg(feature = "test-hooks")]
impl CommitHold {
    /// Waits until the writer is blocked inside the held commit (written, not yet committed).
    pub async fn entered(&mut self) {
        if let Some(entered) = self.entered.take() {
            let _ = entered.await;
        }
    }

    /// Lets the held commit finish (dropping the hold does too).
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl Store {
    /// Opens (creating) the store at `path` and starts its writer thread. The file is locked:
    /// two servers cannot share it. Blocking: call it off the async threads.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(into_redb)
            .map_err(db_error("opening"))?;
        let mut fresh_salt = [0_u8; 32];
        rustix::rand::getrandom(&mut fresh_salt, rustix::rand::GetRandomFlags::empty()).map_err(
            |e| StoreError::Database {
                context: "making the ossfs salt",
                source: Box::new(redb::Error::Io(e.into())),
            },
        )?;
        let mut salt = Vec::new();
        // Make the tables exist so readers never meet a missing table; keep the first salt.
        write(
            &db,
            |tx| {
                tx.open_table(SANDBOXES)?;
                tx.open_table(VOLUMES_TO_REMOVE)?;
                let mut settings = tx.open_table(SETTINGS)?;
                let existing = settings.get(OSSFS_SALT)?.map(|v| v.value().to_vec());
                salt = match existing {
                    Some(existing) => existing,
                    None => {
                        settings.insert(OSSFS_SALT, fresh_salt.as_slice())?;
                        fresh_salt.to_vec()
                    }
                };
                Ok(())
            },
            || {},
        )?;
        let loaded: Vec<StoredSandbox> = read_table(&db, SANDBOXES)?;
        let state = Arc::new(SharedState::with_records(loaded));
        #[cfg(feature = "test-hooks")]
        let hold = Arc::new(std::sync::Mutex::new(None));
        let writer = Writer {
            db,
            state: Arc::clone(&state),
            #[cfg(feature = "test-hooks")]
            hold: Arc::clone(&hold),
        };
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("berth-store".into())
            .spawn(move || {
                // Ends when the store drops its sender; the database (and its file lock) goes
                // with the thread.
                for job in queue {
                    job(&writer);
                }
            })
            .map_err(|e| StoreError::Database {
                context: "starting the writer thread",
                source: Box::new(redb::Error::Io(e)),
            })?;
        Ok(Self {
            jobs: Some(jobs),
            writer: Some(thread),
            state,
            ossfs_salt: salt,
            #[cfg(feature = "test-hooks")]
            hold,
        })
    }

    /// The runtime state the store mirrors its records into.
    pub fn state(&self) -> &Arc<SharedState> {
        &self.state
    }

    /// Runs `job` on the writer thread and waits for its answer without blocking this one. A
    /// caller that stops waiting does not stop the job: it commits (and is mirrored) anyway.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Writer) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(StoreError::WriterStopped)?
            .send(Box::new(move |writer: &Writer| {
                let _ = answer.send(job(writer));
            }))
            .map_err(|_| StoreError::WriterStopped)?;
        answered.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Inserts or replaces a sandbox record.
    pub async fn put(&self, sandbox: &StoredSandbox) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(sandbox).map_err(|source| StoreError::Decode {
            key: sandbox.id.clone(),
            source,
        })?;
        let sandbox = sandbox.clone();
        self.run(move |writer| {
            writer.write(|tx| {
                tx.open_table(SANDBOXES)?
                    .insert(sandbox.id.as_str(), bytes.as_slice())?;
                Ok(())
            })?;
            // Mirrored only after the commit: memory never shows what the disk does not hold.
            writer.state.write(|state| state.put_record(sandbox));
            Ok(())
        })
        .await
    }

    /// Sets a record's expiry; `false` when there is no such record or the reaper is deleting
    /// it. Read, written and mirrored on the writer, in order with [`Store::claim_expired`].
    pub async fn set_expiry(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |writer| {
            let current = writer.state.read(|state| {
                state
                    .record(&id)
                    .filter(|_| !state.is_being_reaped(&id))
                    .cloned()
            });
            let Some(mut sandbox) = current else {
                return Ok(false);
            };
            sandbox.expires_at = Some(expires_at);
            let bytes = serde_json::to_vec(&sandbox).map_err(|source| StoreError::Decode {
                key: sandbox.id.clone(),
                source,
            })?;
            writer.write(|tx| {
                tx.open_table(SANDBOXES)?
                    .insert(sandbox.id.as_str(), bytes.as_slice())?;
                Ok(())
            })?;
            writer.state.write(|state| state.put_record(sandbox));
            Ok(true)
        })
        .await
    }

    /// Hands the record to the reaper if its expiry is at or before `now` (see
    /// [`crate::state::RuntimeState::claim_expired`]). On the writer, so a renewal's commit is
    /// wholly before or after it. Nothing is written to disk: a crash forgets the claim, and the
    /// next start's reaper finds the sandbox expired again.
    pub async fn claim_expired(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::state::ExpiryClaim, StoreError> {
        let id = id.to_owned();
        self.run(move |writer| Ok(writer.state.write(|state| state.claim_expired(&id, now))))
            .await
    }

    /// Gives a claimed record back (its delete failed).
    pub fn release_claim(&self, id: &str) {
        self.state.write(|state| state.release_claim(id));
    }

    /// Removes a sandbox record (absent is fine).
    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |writer| {
            writer.write(|tx| {
                tx.open_table(SANDBOXES)?.remove(id.as_str())?;
                Ok(())
            })?;
            writer.state.write(|state| state.remove_record(&id));
            Ok(())
        })
        .await
    }

    /// One record (from memory).
    pub fn get(&self, id: &str) -> Result<Option<StoredSandbox>, StoreError> {
        Ok(self.state.read(|state| state.record(id).cloned()))
    }

    /// Every record (from memory).
    pub fn all(&self) -> Result<Vec<StoredSandbox>, StoreError> {
        Ok(self.state.read(|state| state.records().cloned().collect()))
    }

    /// This server's secret salt for ossfs mount keys (made once, kept across restarts so the
    /// same volume maps to the same mount).
    pub fn ossfs_salt(&self) -> &[u8] {
        &self.ossfs_salt
    }

    /// Whether any record uses the ossfs mount `key` (its reference count is the store).
    pub fn ossfs_key_in_use(&self, key: &crate::ossfs::OssfsKey) -> bool {
        self.state.read(|state| state.ossfs_key_in_use(key))
    }

    /// Records a volume to remove once unused.
    pub async fn schedule_volume_removal(&self, volume: &CreatedVolume) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(volume).map_err(|source| StoreError::Decode {
            key: volume.name.clone(),
            source,
        })?;
        let name = volume.name.clone();
        self.run(move |writer| {
            writer.write(|tx| {
                tx.open_table(VOLUMES_TO_REMOVE)?
                    .insert(name.as_str(), bytes.as_slice())?;
                Ok(())
            })
        })
        .await
    }

    /// Volumes waiting for removal (read on the writer thread: a disk read).
    pub async fn volumes_to_remove(&self) -> Result<Vec<CreatedVolume>, StoreError> {
        self.run(|writer| read_table(&writer.db, VOLUMES_TO_REMOVE))
            .await
    }

    /// Forgets a scheduled removal.
    pub async fn volume_removed(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run(move |writer| {
            writer.write(|tx| {
                tx.open_table(VOLUMES_TO_REMOVE)?.remove(name.as_str())?;
                Ok(())
            })
        })
        .await
    }

    /// Test hook: the next commit blocks, after its writes and before committing, until the
    /// returned hold is released or dropped.
    #[cfg(feature = "test-hooks")]
    pub fn hold_next_commit(&self) -> CommitHold {
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        *self
            .hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(HeldCommit {
            entered: entered_tx,
            release: release_rx,
        });
        CommitHold {
            entered: Some(entered_rx),
            release: release_tx,
        }
    }
}

impl Drop for Store {
    /// Waits for the writer to finish the jobs already queued and close the database, so the
    /// file lock is free when the store is gone (a restart reopens it at once).
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the state store writer panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> StoredSandbox {
        StoredSandbox {
            id: id.to_owned(),
            phase: Phase::Created,
            image: "img".into(),
            platform: None,
            entrypoint: vec!["sh".into()],
            metadata: BTreeMap::from([("team".into(), "ml".into())]),
            created_at: Utc::now(),
            expires_at: None,
            volumes: vec![],
            created_volumes: vec![],
            sandbox_volumes: vec![],
            ports: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            store.put(&record("a")).await.unwrap();
            store.put(&record("b")).await.unwrap();
            store.remove("b").await.unwrap();
            store
                .schedule_volume_removal(&CreatedVolume {
                    name: "v".into(),
                    nonce: "n".into(),
                    delete_on_termination: true,
                })
                .await
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let all = store.all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].id.as_str(), &all[0].metadata),
            ("a", &record("a").metadata)
        );
        assert_eq!(store.get("b").unwrap(), None);
        let salt = store.ossfs_salt().to_vec();
        assert_eq!(salt.len(), 32);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.ossfs_salt(), salt, "the salt must survive restarts");
        assert_eq!(store.volumes_to_remove().await.unwrap().len(), 1);
        store.volume_removed("v").await.unwrap();
        assert!(store.volumes_to_remove().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_mirror_shows_a_write_once_it_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let written = record("a");
        store.put(&written).await.unwrap();
        assert_eq!(
            store.state().read(|s| s.record("a").cloned()),
            Some(written)
        );
        store.remove("a").await.unwrap();
        assert!(store.state().read(|s| s.record("a").is_none()));
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let _first = Store::open(&path).unwrap();
        assert!(Store::open(&path).is_err());
    }

    #[test]
    fn dropping_the_store_frees_the_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        drop(Store::open(&path).unwrap());
        assert!(Store::open(&path).is_ok());
    }
}

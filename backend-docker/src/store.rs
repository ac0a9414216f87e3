//! The runtime's crash-safe state under `storage.state_dir`: one record per sandbox (metadata,
//! renewed expiry, what was mounted, and what Berth created for it), plus volumes waiting to be
//! removed once no sandbox uses them. Metadata is never read back from container labels (images
//! add labels of their own). Credentials are never stored.
//!
//! A record is written *before* Docker objects are made (phase `Creating`, with the volume
//! nonces and staging names it is about to use), so a crash mid-create leaves enough behind for
//! startup reconciliation to roll it back (ARCHITECTURE.md, "Record before objects").
//!
//! On disk, records are in the store's own versioned format (`schema`), never a serialisation
//! of the API's types: a change of the API's JSON cannot make stored state unreadable.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::state::SharedState;
use berth_core::model::PlatformSpec;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub mod schema;

pub use schema::SCHEMA_VERSION;

const SANDBOXES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sandboxes");
const VOLUMES_TO_REMOVE: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("volumes_to_remove");
const SETTINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("settings");
/// The server's secret for keying ossfs mounts (see `ossfs::OssfsKey`).
const OSSFS_SALT: &str = "ossfs_salt";

/// Where a create is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Objects are being made; a record still in this phase at startup is rolled back.
    Creating,
    /// The container runs (or ran).
    Created,
    /// A delete has begun (committed before the container is removed); a record still in
    /// this phase at startup has its delete finished.
    Deleting,
}

/// A named volume Berth created, identified by the nonce label it was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedVolume {
    /// Docker volume name.
    pub name: String,
    /// The value of the `berth.nonce` label Berth set; only a volume carrying it is Berth's.
    pub nonce: String,
    /// Whether to remove it once its creator is deleted and no sandbox uses it.
    pub delete_on_termination: bool,
}

/// A mounted volume as stored: what is reported, plus what Berth needs to release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVolume {
    /// The report (never a credential). In memory only: on disk the store's own format
    /// (`schema`) holds its fields, so a change of the API's JSON cannot change the file.
    pub report: berth_core::wire::VolumeStatus,
    /// The Docker named volume it uses, if any (reference counting).
    pub docker_volume: Option<String>,
    /// Whether it has a staging mount under `<state_dir>/mounts/<id>/<name>`.
    pub staged: bool,
    /// The shared ossfs mount it uses (reference counting: a mount is released when no record
    /// names its key).
    pub ossfs_key: Option<crate::ossfs::OssfsKey>,
}

/// One sandbox's record.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A record does not decode (damaged, or not in the format the settings name).
    #[error("state store record {key}: {source}")]
    Decode {
        /// Which record.
        key: String,
        /// The error.
        source: schema::SchemaError,
    },
    /// A record does not encode.
    #[error("state store record {key}: {source}")]
    Encode {
        /// Which record.
        key: String,
        /// The error.
        source: serde_json::Error,
    },
    /// The store was written by a newer Berth in a format this one does not know; it is left
    /// untouched.
    #[error(
        "state store format {found} was written by a newer Berth (this one reads formats up to {SCHEMA_VERSION}); run that version, or move storage.state_dir aside"
    )]
    NewerFormat {
        /// The format on disk.
        found: u32,
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
    /// The format of the records on disk (read by [`Store::volumes_to_remove`]).
    format: u32,
    state: Arc<SharedState>,
    #[cfg(feature = "test-hooks")]
    hold: Arc<std::sync::Mutex<Option<HeldCommit>>>,
}

impl Writer {
    /// Commits a sandbox record, then mirrors it: memory never shows what the disk does not hold.
    fn put_record(&self, sandbox: StoredSandbox) -> Result<(), StoreError> {
        let bytes = schema::encode_sandbox(&sandbox).map_err(|source| StoreError::Encode {
            key: sandbox.id.clone(),
            source,
        })?;
        self.write(|tx| {
            tx.open_table(SANDBOXES)?
                .insert(sandbox.id.as_str(), bytes.as_slice())?;
            Ok(())
        })?;
        self.state.write(|state| state.put_record(sandbox));
        Ok(())
    }

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

/// Every value of a table, decoded by `decode` from the store's `format`.
fn read_table<T>(
    db: &Database,
    definition: TableDefinition<'_, &str, &[u8]>,
    format: u32,
    decode: fn(u32, &[u8]) -> Result<T, schema::SchemaError>,
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
        let decoded = decode(format, value.value()).map_err(|source| StoreError::Decode {
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
        let mut format = schema::SCHEMA_VERSION;
        // Make the tables exist so readers never meet a missing table; keep the first salt;
        // learn the records' format (a store from before it was written is format 1) and
        // record it.
        write(
            &db,
            |tx| {
                tx.open_table(SANDBOXES)?;
                tx.open_table(VOLUMES_TO_REMOVE)?;
                let mut settings = tx.open_table(SETTINGS)?;
                let stored_format = settings
                    .get(schema::SCHEMA_VERSION_KEY)?
                    .map(|v| String::from_utf8_lossy(v.value()).into_owned());
                format = match stored_format {
                    // Unreadable: treated as newer than any format, so the store is refused.
                    Some(text) => text.trim().parse().unwrap_or(u32::MAX),
                    None => {
                        settings.insert(
                            schema::SCHEMA_VERSION_KEY,
                            schema::SCHEMA_VERSION.to_string().as_bytes(),
                        )?;
                        schema::SCHEMA_VERSION
                    }
                };
                if format > schema::SCHEMA_VERSION {
                    // Refused below; nothing more is written to a newer store.
                    return Ok(());
                }
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
        if format > schema::SCHEMA_VERSION {
            return Err(StoreError::NewerFormat { found: format });
        }
        let loaded = read_table(&db, SANDBOXES, format, schema::decode_sandbox)?;
        let state = Arc::new(SharedState::with_records(loaded));
        #[cfg(feature = "test-hooks")]
        let hold = Arc::new(std::sync::Mutex::new(None));
        let writer = Writer {
            db,
            format,
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
        let sandbox = sandbox.clone();
        self.run(move |writer| writer.put_record(sandbox)).await
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
            writer.put_record(sandbox)?;
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
        let bytes = schema::encode_created_volume(volume).map_err(|source| StoreError::Encode {
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
        self.run(|writer| {
            read_table(
                &writer.db,
                VOLUMES_TO_REMOVE,
                writer.format,
                schema::decode_created_volume,
            )
        })
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

    /// Records exactly as the format-1 writer put them on disk (when a record was a
    /// serialisation of the runtime's types, the API's `VolumeStatus` flattened in), with no
    /// `schema_version` setting: a store from before formats were versioned.
    const FORMAT_1_SANDBOXES: &str =
        include_str!("../tests/fixtures/store-format-1/sandboxes.jsonl");
    const FORMAT_1_REMOVALS: &str =
        include_str!("../tests/fixtures/store-format-1/volumes_to_remove.jsonl");

    /// A database holding `lines` in the sandboxes table, keyed by their id, and `settings`.
    fn raw_store(path: &Path, settings: &[(&str, &str)]) {
        let db = Database::create(path).unwrap();
        write(
            &db,
            |tx| {
                let mut table = tx.open_table(SANDBOXES)?;
                for line in FORMAT_1_SANDBOXES.lines() {
                    let value: serde_json::Value = serde_json::from_str(line).unwrap();
                    let id = value["id"].as_str().unwrap();
                    table.insert(id, line.as_bytes())?;
                }
                let mut removals = tx.open_table(VOLUMES_TO_REMOVE)?;
                for line in FORMAT_1_REMOVALS.lines() {
                    removals.insert("sessions", line.as_bytes())?;
                }
                let mut table = tx.open_table(SETTINGS)?;
                for (k, v) in settings {
                    table.insert(*k, v.as_bytes())?;
                }
                Ok(())
            },
            || {},
        )
        .unwrap();
    }

    #[tokio::test]
    async fn records_written_in_format_1_still_load() {
        use berth_core::model::{PlatformArch, PlatformOs, ReadOnlyMode, VolumeBackendKind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        raw_store(&path, &[]);
        let store = Store::open(&path).unwrap();
        let full = store
            .get("0b6a7f52-3c1e-4d7a-9f0e-2a1b3c4d5e6f")
            .unwrap()
            .expect("the full record loads");
        assert_eq!(full.phase, Phase::Created);
        assert_eq!(
            full.platform,
            Some(PlatformSpec {
                os: PlatformOs::Linux,
                arch: PlatformArch::Amd64
            })
        );
        assert_eq!(full.metadata.get("team").map(String::as_str), Some("ml"));
        assert_eq!(
            full.expires_at.map(|e| e.to_rfc3339()),
            Some("2026-11-29T17:00:00.123+00:00".to_owned())
        );
        let volumes: Vec<(&str, VolumeBackendKind, Option<&str>, ReadOnlyMode, bool)> = full
            .volumes
            .iter()
            .map(|v| {
                (
                    v.report.name.as_str(),
                    v.report.backend,
                    v.report.sub_path.as_deref(),
                    v.report.read_only_mode,
                    v.staged,
                )
            })
            .collect();
        assert_eq!(
            volumes,
            [
                (
                    "work",
                    VolumeBackendKind::Pvc,
                    Some("uid-1/session-7"),
                    ReadOnlyMode::None,
                    true
                ),
                (
                    "shared",
                    VolumeBackendKind::Pvc,
                    None,
                    ReadOnlyMode::NonRecursive,
                    false
                ),
                (
                    "data",
                    VolumeBackendKind::Host,
                    Some("a"),
                    ReadOnlyMode::Recursive,
                    true
                ),
                (
                    "bucket",
                    VolumeBackendKind::Ossfs,
                    Some("runs/1"),
                    ReadOnlyMode::Recursive,
                    true
                ),
                (
                    "archive",
                    VolumeBackendKind::Nfs,
                    None,
                    ReadOnlyMode::NonRecursive,
                    false
                ),
            ]
        );
        assert_eq!(full.volumes[0].docker_volume.as_deref(), Some("sessions"));
        assert_eq!(
            full.volumes[3]
                .ossfs_key
                .clone()
                .map(String::from)
                .as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(full.created_volumes[0].delete_on_termination);
        assert_eq!(full.ports.get(&8080), Some(&32768));
        let creating = store.get("creating-1").unwrap().unwrap();
        assert_eq!((creating.phase, creating.platform), (Phase::Creating, None));
        assert_eq!(store.volumes_to_remove().await.unwrap().len(), 1);
        // Format 1 is written byte for byte as it was read.
        for line in FORMAT_1_SANDBOXES.lines() {
            let id = serde_json::from_str::<serde_json::Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let record = store.get(&id).unwrap().unwrap();
            assert_eq!(
                String::from_utf8(schema::encode_sandbox(&record).unwrap()).unwrap(),
                line
            );
        }
        drop(store);
        // The store now names its format.
        let db = Database::open(&path).unwrap();
        let tx = db.begin_read().unwrap();
        let settings = tx.open_table(SETTINGS).unwrap();
        assert_eq!(
            settings
                .get(schema::SCHEMA_VERSION_KEY)
                .unwrap()
                .map(|v| v.value().to_vec()),
            Some(b"1".to_vec())
        );
    }

    #[test]
    fn a_store_in_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        raw_store(&path, &[(schema::SCHEMA_VERSION_KEY, "2")]);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::NewerFormat { found: 2 }), "{err}");
        assert!(err.to_string().contains("newer Berth"), "{err}");
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

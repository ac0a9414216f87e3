//! The runtime's crash-safe state under `storage.state_dir`: one record per sandbox (metadata,
//! renewed expiry, what was mounted, and what Berth created for it), plus volumes waiting to be
//! removed once no sandbox uses them. Metadata is never read back from container labels (images
//! add labels of their own). Credentials are never stored.
//!
//! A record is written *before* Docker objects are made (phase `Creating`, with the volume
//! nonces and staging names it is about to use), so a crash mid-create leaves enough behind for
//! startup reconciliation to roll it back.

use std::collections::BTreeMap;
use std::path::Path;

use berth_core::model::PlatformSpec;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use berth_core::model::SandboxState;

use crate::index::ContainerStatus;
use crate::list_index::ListIndex;

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

/// The store: the database on disk, mirrored in memory so reads never decode it (the process
/// holds the database's lock, so nobody else writes it).
#[derive(Debug)]
pub struct Store {
    db: Database,
    cache: std::sync::RwLock<Cache>,
    ossfs_salt: Vec<u8>,
}

/// The in-memory mirror: every record, and the list order over them.
#[derive(Debug, Default)]
pub struct Cache {
    /// Records by id.
    pub records: std::collections::HashMap<String, StoredSandbox>,
    /// List order and postings (see `list_index`).
    pub listing: ListIndex,
    /// Container statuses as the container index last reported them, so a record written
    /// later is listed in its right state.
    containers: std::collections::HashMap<String, ContainerStatus>,
}

impl Cache {
    fn insert(&mut self, sandbox: StoredSandbox) {
        let state = sandbox_state(sandbox.phase, self.containers.get(&sandbox.id).copied());
        self.listing
            .upsert(&sandbox.id, sandbox.created_at, &sandbox.metadata, state);
        self.records.insert(sandbox.id.clone(), sandbox);
    }

    fn remove(&mut self, id: &str) {
        self.records.remove(id);
        self.listing.remove(id);
    }
}

/// The state a sandbox is in, from its create progress and its container's status.
pub fn sandbox_state(phase: Phase, container: Option<ContainerStatus>) -> SandboxState {
    match (phase, container) {
        (Phase::Creating, _) | (_, Some(ContainerStatus::Created)) => SandboxState::Pending,
        (_, Some(ContainerStatus::Running)) => SandboxState::Running,
        (_, Some(ContainerStatus::Paused)) => SandboxState::Paused,
        (
            _,
            Some(ContainerStatus::Exited {
                code: 0,
                oom_killed: false,
            }),
        ) => SandboxState::Terminated,
        (_, Some(ContainerStatus::Exited { .. } | ContainerStatus::Gone) | None) => {
            SandboxState::Failed
        }
    }
}

impl Store {
    /// Opens (creating) the store at `path`. The file is locked: two servers cannot share it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(into_redb)
            .map_err(db_error("opening"))?;
        let mut store = Self {
            db,
            cache: Default::default(),
            ossfs_salt: Vec::new(),
        };
        let mut fresh_salt = [0_u8; 32];
        rustix::rand::getrandom(&mut fresh_salt, rustix::rand::GetRandomFlags::empty()).map_err(
            |e| StoreError::Database {
                context: "making the ossfs salt",
                source: Box::new(redb::Error::Io(e.into())),
            },
        )?;
        let mut salt = Vec::new();
        // Make the tables exist so readers never meet a missing table; keep the first salt.
        store.write(|tx| {
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
        })?;
        store.ossfs_salt = salt;
        let loaded: Vec<StoredSandbox> = store.read_table(SANDBOXES)?;
        let cache = store
            .cache
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for sandbox in loaded {
            cache.insert(sandbox);
        }
        Ok(store)
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let tx = self
            .db
            .begin_write()
            .map_err(into_redb)
            .map_err(db_error("beginning a write"))?;
        f(&tx).map_err(db_error("writing"))?;
        tx.commit()
            .map_err(into_redb)
            .map_err(db_error("committing"))
    }

    /// Inserts or replaces a sandbox record.
    pub fn put(&self, sandbox: &StoredSandbox) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(sandbox).map_err(|source| StoreError::Decode {
            key: sandbox.id.clone(),
            source,
        })?;
        self.write(|tx| {
            tx.open_table(SANDBOXES)?
                .insert(sandbox.id.as_str(), bytes.as_slice())?;
            Ok(())
        })?;
        // Mirrored only after the commit: memory never shows what the disk does not hold.
        self.cache_mut().insert(sandbox.clone());
        Ok(())
    }

    /// Removes a sandbox record (absent is fine).
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(SANDBOXES)?.remove(id)?;
            Ok(())
        })?;
        self.cache_mut().remove(id);
        Ok(())
    }

    fn cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One record.
    pub fn get(&self, id: &str) -> Result<Option<StoredSandbox>, StoreError> {
        Ok(self.cache().records.get(id).cloned())
    }

    /// Every record.
    pub fn all(&self) -> Result<Vec<StoredSandbox>, StoreError> {
        Ok(self.cache().records.values().cloned().collect())
    }

    /// This server's secret salt for ossfs mount keys (made once, kept across restarts so the
    /// same volume maps to the same mount).
    pub fn ossfs_salt(&self) -> &[u8] {
        &self.ossfs_salt
    }

    /// Whether any record uses the ossfs mount `key` (its reference count is the store).
    pub fn ossfs_key_in_use(&self, key: &crate::ossfs::OssfsKey) -> bool {
        self.cache()
            .records
            .values()
            .any(|s| s.volumes.iter().any(|v| v.ossfs_key.as_ref() == Some(key)))
    }

    /// Takes a container status change from the container index (`None`: the container is
    /// gone), so the list index keeps every sandbox under its current state.
    pub fn container_changed(&self, id: &str, status: Option<ContainerStatus>) {
        let mut cache = self.cache_mut();
        match status {
            Some(status) => cache.containers.insert(id.to_owned(), status),
            None => cache.containers.remove(id),
        };
        if let Some(phase) = cache.records.get(id).map(|r| r.phase) {
            cache.listing.set_state(id, sandbox_state(phase, status));
        }
    }

    /// Runs `f` on the mirror (records and list order), under the read lock. Lock order: a
    /// caller that also needs the container index must take the index's lock first (its status
    /// observer takes this lock while holding the index's).
    pub fn with_cache<R>(&self, f: impl FnOnce(&Cache) -> R) -> R {
        f(&self.cache())
    }

    /// Every value of a table, decoded.
    fn read_table<T: serde::de::DeserializeOwned>(
        &self,
        definition: TableDefinition<'_, &str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self
            .db
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

    /// Records a volume to remove once unused.
    pub fn schedule_volume_removal(&self, volume: &CreatedVolume) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(volume).map_err(|source| StoreError::Decode {
            key: volume.name.clone(),
            source,
        })?;
        self.write(|tx| {
            tx.open_table(VOLUMES_TO_REMOVE)?
                .insert(volume.name.as_str(), bytes.as_slice())?;
            Ok(())
        })
    }

    /// Volumes waiting for removal.
    pub fn volumes_to_remove(&self) -> Result<Vec<CreatedVolume>, StoreError> {
        self.read_table(VOLUMES_TO_REMOVE)
    }

    /// Forgets a scheduled removal.
    pub fn volume_removed(&self, name: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(VOLUMES_TO_REMOVE)?.remove(name)?;
            Ok(())
        })
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

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            store.put(&record("a")).unwrap();
            store.put(&record("b")).unwrap();
            store.remove("b").unwrap();
            store
                .schedule_volume_removal(&CreatedVolume {
                    name: "v".into(),
                    nonce: "n".into(),
                    delete_on_termination: true,
                })
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
        assert_eq!(store.volumes_to_remove().unwrap().len(), 1);
        store.volume_removed("v").unwrap();
        assert!(store.volumes_to_remove().unwrap().is_empty());
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let _first = Store::open(&path).unwrap();
        assert!(Store::open(&path).is_err());
    }
}

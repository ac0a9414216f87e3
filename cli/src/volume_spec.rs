//! The compact `--volume` syntax of `berth create`: one volume in one command-line argument,
//! after Docker's `--mount`.
//!
//! ```text
//! --volume type=pvc,claim=sessions,target=/workspace,subpath=uid-1/session-7
//! --volume type=host,source=/data/skills,target=/skills,readonly
//! --volume type=nfs,server=nfs.example,path=/export,target=/mnt/shared
//! --volume type=ossfs,bucket=my-bucket,endpoint=oss-cn-hangzhou.aliyuncs.com,target=/mnt/oss,access-key-id=AKID,secret-env=OSS_SECRET
//! ```
//!
//! # Syntax
//!
//! A spec is one CSV record of comma-separated fields. A field is `key=value`, split on its
//! **first** `=`, so a value may hold `=` and `:` (`server=fd00::1`, `server=[fd00::1]`,
//! `target=/mnt/a:b`), or a bare flag such as `readonly`. A value holding a comma or a double
//! quote is written by quoting the whole field, CSV style, with inner quotes doubled:
//! `"target=/mnt/a,b"`, `"name=say ""hi"""` (in a shell, quote the argument as a whole as well:
//! `--volume 'type=host,"source=/srv/a,b",target=/b'`). Keys are case-insensitive and blanks
//! around a key are ignored; values are taken exactly as written, and checked by the server (or
//! `berth validate`), not here.
//!
//! # Keys
//!
//! One set of keys for every backend; a key that belongs to another backend than the volume's
//! type is an error.
//!
//! | Key | Aliases | For type | Value | API field of the `volumes[]` item |
//! |---|---|---|---|---|
//! | `type` | | all | `pvc`, `host`, `nfs` or `ossfs` (may be omitted, see below) | which of `pvc`, `host`, `nfs`, `ossfs` is set |
//! | `name` | | all | volume name, a DNS label (optional: derived from `target` when omitted) | `name` |
//! | `target` | `dst`, `destination` | all | absolute path in the sandbox (**required**) | `mountPath` |
//! | `subpath` | `sub-path`, `volume-subpath` | all | relative path below the backend's root | `subPath` |
//! | `readonly` | `ro` | all | flag; or `=true`/`false`/`1`/`0` (default false) | `readOnly` |
//! | `claim` | | pvc | claim (Docker: volume) name (**required**) | `pvc.claimName` |
//! | `create` | | pvc | flag; or `=true`/`false`/`1`/`0` (default **true**, as the API's) | `pvc.createIfNotExists` |
//! | `delete-on-termination` | | pvc | flag; or `=true`/`false`/`1`/`0` (default false) | `pvc.deleteOnSandboxTermination` |
//! | `storage-class` | | pvc | StorageClass of a created claim | `pvc.storageClass` |
//! | `size` | | pvc | capacity of a created claim, e.g. `1Gi` | `pvc.storage` |
//! | `access-mode` | | pvc | e.g. `ReadWriteOnce`; repeatable, in order | `pvc.accessModes[]` |
//! | `source` | `src` | host | absolute host path (**required**) | `host.path` |
//! | `server` | | nfs | host name, IPv4, IPv6 bare or in brackets (**required**) | `nfs.server` |
//! | `path` | | nfs | absolute export path (**required**) | `nfs.path` |
//! | `nfs-opt` | | nfs | allowlisted mount option, e.g. `vers=4.1`; repeatable, in order | `nfs.options[]` |
//! | `bucket` | | ossfs | bucket name (**required**) | `ossfs.bucket` |
//! | `endpoint` | | ossfs | endpoint host name (**required**) | `ossfs.endpoint` |
//! | `version` | | ossfs | `1.0` or `2.0` | `ossfs.version` |
//! | `ossfs-opt` | | ossfs | allowlisted mount option, e.g. `kernel_cache`; repeatable, in order | `ossfs.options[]` |
//! | `access-key-id` | | ossfs | the access key id (neither this nor `access-key-id-env`: from `OSS_ACCESS_KEY_ID`) | `ossfs.accessKeyId` |
//! | `access-key-id-env` | | ossfs | environment variable holding the access key id | `ossfs.accessKeyId` |
//! | `secret-env` | | ossfs | environment variable holding the access key secret (neither this nor `secret-file`: `OSS_ACCESS_KEY_SECRET`) | `ossfs.accessKeySecret` |
//! | `secret-file` | | ossfs | file holding the access key secret (one trailing newline ignored) | `ossfs.accessKeySecret` |
//!
//! Only `access-mode`, `nfs-opt` and `ossfs-opt` may be given more than once; an alias counts as
//! its key (`target=/a,dst=/b` gives the target twice). A flag also takes `=true`, `=false`, `=1`
//! or `=0` (any case), and nothing else; a key that takes a value must have a non-blank one.
//!
//! - **`type`** may be omitted when the spec names exactly one backend's source key: `claim`
//!   implies `pvc`, `source` `host`, `server` `nfs`, `bucket` `ossfs`. A given `type` that the
//!   other keys contradict (`type=host,claim=x`) is an error naming the key.
//! - **`name`**: without one, [`derive_name`] makes it from the target (`/workspace` →
//!   `workspace`, `/mnt/my_data` → `mnt-my-data`), and [`assign_names`] makes the derived names of
//!   one request unique (`workspace`, `workspace-2`, …) without ever changing an explicit name.
//! - **`readonly` on NFS**: it sets the volume's `readOnly`; `nfs.readOnly`, the Kubernetes form's
//!   flag that forces every mount of the export read-only, is left false (one mount per volume in
//!   this form, so the two mean the same). [`VolumeSpec::from_wire`] reads either.
//! - **ossfs credentials**: the spec holds only *references*. The secret comes from
//!   `secret-env=VAR` or `secret-file=PATH`, resolved by [`VolumeSpec::to_wire`] through a
//!   [`SecretSource`]; a key that would put the secret itself on the command line
//!   (`access-key-secret=…`, or any other key naming a secret or password) is refused, so that it
//!   never lands in shell history or the process list.
//! - **Showing a request**: [`VolumeSpec::from_wire`] turns a `volumes[]` item of Berth's form back
//!   into a spec (its `name` is left out when it is the one derived from its target). An ossfs
//!   volume is refused there ([`VolumeSpecError::FromWire`]): its credentials are values, and the
//!   compact form holds only references to them, so no spec would both parse and say where its
//!   secret comes from. Kubernetes-form volumes (`persistentVolumeClaim`, `hostPath`, mounted
//!   through the request's `mounts`) are refused too.
//!
//! [`VolumeSpec`]'s `Display` writes the canonical spec: `type` first, then `name`, the backend's
//! source keys, `target`, `subpath`, `readonly`, the backend's other keys; defaults left out,
//! flags bare, fields quoted only when needed. It parses back to the same spec.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::Path;
use std::str::FromStr;

use berth_core::model::VolumeBackendKind;
use berth_core::wire;

/// Most characters of a volume name (a DNS label).
const MAX_NAME_LEN: usize = 63;

/// The variable an ossfs access key id is read from when no key names one.
pub const DEFAULT_ACCESS_KEY_ID_ENV: &str = "OSS_ACCESS_KEY_ID";
/// The variable an ossfs access key secret is read from when no key names one.
pub const DEFAULT_SECRET_ENV: &str = "OSS_ACCESS_KEY_SECRET";

/// The name used when a target leaves nothing to derive one from (e.g. `/`).
const FALLBACK_NAME: &str = "volume";

/// One volume as the compact `--volume` syntax describes it. It holds references to credentials
/// (an environment variable's name, a file's path), never a credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// `name`: the volume's name; `None` to derive it from the target (see [`assign_names`]).
    pub name: Option<String>,
    /// `target`: where the volume appears in the sandbox (`mountPath`).
    pub target: String,
    /// `subpath`: the part of the backend to mount instead of its root (`subPath`).
    pub sub_path: Option<String>,
    /// `readonly`: mount read-only (`readOnly`).
    pub read_only: bool,
    /// The backend and its keys.
    pub backend: VolumeBackend,
}

/// A volume's backend, with the keys only it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeBackend {
    /// `type=pvc`: a named volume (Docker) or PersistentVolumeClaim (Kubernetes).
    Pvc(PvcSpec),
    /// `type=host`: a host directory.
    Host(HostSpec),
    /// `type=nfs`: an NFS export.
    Nfs(NfsSpec),
    /// `type=ossfs`: an Alibaba Cloud OSS bucket through ossfs.
    Ossfs(OssfsSpec),
}

/// The keys of `type=pvc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcSpec {
    /// `claim` (`pvc.claimName`).
    pub claim: String,
    /// `create` (`pvc.createIfNotExists`); true unless `create=false`.
    pub create: bool,
    /// `delete-on-termination` (`pvc.deleteOnSandboxTermination`).
    pub delete_on_termination: bool,
    /// `storage-class` (`pvc.storageClass`).
    pub storage_class: Option<String>,
    /// `size` (`pvc.storage`).
    pub size: Option<String>,
    /// Every `access-mode`, in order (`pvc.accessModes`).
    pub access_modes: Vec<String>,
}

/// The keys of `type=host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// `source` (`host.path`).
    pub source: String,
}

/// The keys of `type=nfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsSpec {
    /// `server` (`nfs.server`).
    pub server: String,
    /// `path` (`nfs.path`).
    pub path: String,
    /// Every `nfs-opt`, in order (`nfs.options`).
    pub options: Vec<String>,
}

/// The keys of `type=ossfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssfsSpec {
    /// `bucket` (`ossfs.bucket`).
    pub bucket: String,
    /// `endpoint` (`ossfs.endpoint`).
    pub endpoint: String,
    /// `version` (`ossfs.version`).
    pub version: Option<String>,
    /// Every `ossfs-opt`, in order (`ossfs.options`).
    pub options: Vec<String>,
    /// `access-key-id` or `access-key-id-env` (`ossfs.accessKeyId`).
    pub access_key_id: AccessKeyId,
    /// `secret-env` or `secret-file` (`ossfs.accessKeySecret`).
    pub secret: SecretRef,
}

/// Where the ossfs access key id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessKeyId {
    /// `access-key-id=ID`: the id itself (an id is not a secret).
    Value(String),
    /// `access-key-id-env=VAR`: the environment variable holding it.
    Env(String),
}

/// Where the ossfs access key secret comes from; never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `secret-env=VAR`: the environment variable holding it.
    Env(String),
    /// `secret-file=PATH`: the file holding it.
    File(String),
}

/// What went wrong with a volume spec, and what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum VolumeSpecError {
    /// Nothing was given.
    #[error(
        "the volume spec is empty; write comma-separated key=value fields, e.g. type=host,source=/data,target=/data"
    )]
    Empty,
    /// The spec spans several lines (CSV records).
    #[error(
        "the volume spec holds a line break outside quotes; give one volume per --volume, on one line"
    )]
    MultipleLines,
    /// A field is empty or blank.
    #[error(
        "field {position} of the volume spec is empty (two commas in a row, or a trailing comma); remove it"
    )]
    EmptyField {
        /// 1-based position of the field.
        position: usize,
    },
    /// A field has no key before its `=`.
    #[error("field {field:?} has no key before '='; write key=value")]
    NoKey {
        /// The field as written.
        field: String,
    },
    /// A key the syntax does not know.
    #[error("unknown key {key:?}{}; expected one of: {}", did_you_mean(.suggestion), key_names())]
    UnknownKey {
        /// The key as written (lowercased).
        key: String,
        /// A known key spelled alike, if any.
        suggestion: Option<&'static str>,
    },
    /// A key that would put a secret on the command line.
    #[error(
        "key {key:?} would put a secret on the command line, where shell history and other users can read it; use secret-env=VAR (an environment variable holding it) or secret-file=PATH (a file holding it) instead"
    )]
    SecretOnCommandLine {
        /// The key as written (lowercased).
        key: String,
    },
    /// A non-repeatable key given twice (possibly through an alias).
    #[error("key {key:?} is given twice{}; give it once", also_as(.key, .first))]
    DuplicateKey {
        /// The second spelling.
        key: String,
        /// The first spelling.
        first: String,
    },
    /// Two keys that exclude each other.
    #[error("keys {first:?} and {second:?} exclude each other; give only one")]
    Conflict {
        /// The key given first.
        first: String,
        /// The key given second.
        second: String,
    },
    /// A key that needs a value was given as a bare flag.
    #[error("key {key:?} needs a value: write {example}")]
    MissingValue {
        /// The key as written (lowercased).
        key: String,
        /// How it is written, e.g. `target=PATH`.
        example: &'static str,
    },
    /// A key was given a blank value.
    #[error("key {key:?} has an empty value: write {example}")]
    EmptyValue {
        /// The key as written (lowercased).
        key: String,
        /// How it is written, e.g. `target=PATH`.
        example: &'static str,
    },
    /// A flag was given a value other than a boolean.
    #[error(
        "key {key:?} is a flag: give it bare ({key}) or as {key}=true, {key}=false, {key}=1 or {key}=0, not {key}={value:?}"
    )]
    InvalidFlag {
        /// The key as written (lowercased).
        key: String,
        /// The value given.
        value: String,
    },
    /// `type` names no backend.
    #[error("unknown type {value:?}; expected one of: pvc, host, nfs, ossfs")]
    UnknownType {
        /// The value given.
        value: String,
    },
    /// Neither `type` nor a key implying it.
    #[error(
        "the volume has no type: give type=pvc, type=host, type=nfs or type=ossfs (or one of claim=, source=, server=, bucket=, which imply it)"
    )]
    MissingType,
    /// No `type`, and source keys of several backends.
    #[error(
        "keys {} imply different types; give type= and only that type's keys",
        quoted_list(.keys)
    )]
    AmbiguousType {
        /// The source keys given, as written.
        keys: Vec<String>,
    },
    /// A key of another backend than the volume's.
    #[error(
        "key {key:?} belongs to type={key_type}, but this volume is type={volume_type}; remove it, or use type={key_type}"
    )]
    WrongBackend {
        /// The key as written (lowercased).
        key: String,
        /// The backend the key belongs to.
        key_type: VolumeBackendKind,
        /// The volume's backend.
        volume_type: VolumeBackendKind,
    },
    /// A required key is missing.
    #[error("missing key {key:?}: type={volume_type} needs {example}")]
    MissingKey {
        /// The key's canonical name.
        key: &'static str,
        /// What to write, e.g. `target=PATH`.
        example: &'static str,
        /// The volume's backend.
        volume_type: VolumeBackendKind,
    },
    /// An environment variable a key names is not set.
    #[error(
        "environment variable {var:?} (named by {key}) is not set; set it, or name another one"
    )]
    EnvVarMissing {
        /// The key naming it.
        key: &'static str,
        /// The variable.
        var: String,
    },
    /// An environment variable a key names is not valid UTF-8.
    #[error("environment variable {var:?} (named by {key}) is not valid UTF-8")]
    EnvVarNotUnicode {
        /// The key naming it.
        key: &'static str,
        /// The variable.
        var: String,
    },
    /// The file `secret-file` names cannot be read.
    #[error("cannot read the file {path:?} (named by {key}): {source}")]
    SecretFile {
        /// The key naming it.
        key: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A credential resolved to nothing.
    #[error("{origin} (named by {key}) is empty; it must hold the credential")]
    EmptyCredential {
        /// The key naming its origin.
        key: &'static str,
        /// The environment variable or file, described.
        origin: String,
    },
    /// A wire volume the compact form cannot express.
    #[error("volume {volume:?} has no compact form: {reason}")]
    FromWire {
        /// The volume's name.
        volume: String,
        /// Why.
        reason: String,
    },
}

fn did_you_mean(suggestion: &Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean {s:?}?)"))
}

fn also_as(key: &str, first: &str) -> String {
    if key == first {
        String::new()
    } else {
        format!(" (first as {first:?})")
    }
}

fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    quoted.join(", ")
}

fn key_names() -> String {
    let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    names.join(", ")
}

/// Looks up the credentials an ossfs spec refers to: the process's environment and files in
/// [`ProcessSecrets`], anything in a test.
pub trait SecretSource {
    /// The value of environment variable `name`.
    fn env_var(&self, name: &str) -> Result<String, std::env::VarError>;
    /// The content of the file at `path`.
    fn read_file(&self, path: &Path) -> io::Result<String>;
}

/// The real [`SecretSource`]: this process's environment and filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSecrets;

impl SecretSource for ProcessSecrets {
    fn env_var(&self, name: &str) -> Result<String, std::env::VarError> {
        std::env::var(name)
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Every key of the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Type,
    Name,
    Target,
    SubPath,
    ReadOnly,
    Claim,
    Create,
    DeleteOnTermination,
    StorageClass,
    Size,
    AccessMode,
    Source,
    Server,
    Path,
    NfsOpt,
    Bucket,
    Endpoint,
    Version,
    OssfsOpt,
    AccessKeyId,
    AccessKeyIdEnv,
    SecretEnv,
    SecretFile,
}

/// What a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// A value, at most once.
    Value,
    /// A value, any number of times.
    Values,
    /// A boolean: bare, or `=true|false|1|0`.
    Flag,
}

struct KeyInfo {
    key: Key,
    name: &'static str,
    aliases: &'static [&'static str],
    /// The backend the key belongs to; `None` for keys of every volume.
    backend: Option<VolumeBackendKind>,
    takes: Takes,
    /// How it is written, for messages.
    example: &'static str,
}

const fn key(
    key: Key,
    name: &'static str,
    aliases: &'static [&'static str],
    backend: Option<VolumeBackendKind>,
    takes: Takes,
    example: &'static str,
) -> KeyInfo {
    KeyInfo {
        key,
        name,
        aliases,
        backend,
        takes,
        example,
    }
}

const PVC: Option<VolumeBackendKind> = Some(VolumeBackendKind::Pvc);
const HOST: Option<VolumeBackendKind> = Some(VolumeBackendKind::Host);
const NFS: Option<VolumeBackendKind> = Some(VolumeBackendKind::Nfs);
const OSSFS: Option<VolumeBackendKind> = Some(VolumeBackendKind::Ossfs);

/// The keys, in the module documentation's order.
#[rustfmt::skip] // One row per key reads as the table it is.
static KEYS: &[KeyInfo] = &[
    key(Key::Type, "type", &[], None, Takes::Value, "type=pvc|host|nfs|ossfs"),
    key(Key::Name, "name", &[], None, Takes::Value, "name=NAME"),
    key(Key::Target, "target", &["dst", "destination"], None, Takes::Value, "target=PATH"),
    key(Key::SubPath, "subpath", &["sub-path", "volume-subpath"], None, Takes::Value, "subpath=PATH"),
    key(Key::ReadOnly, "readonly", &["ro"], None, Takes::Flag, "readonly"),
    key(Key::Claim, "claim", &[], PVC, Takes::Value, "claim=NAME"),
    key(Key::Create, "create", &[], PVC, Takes::Flag, "create=false"),
    key(Key::DeleteOnTermination, "delete-on-termination", &[], PVC, Takes::Flag, "delete-on-termination"),
    key(Key::StorageClass, "storage-class", &[], PVC, Takes::Value, "storage-class=CLASS"),
    key(Key::Size, "size", &[], PVC, Takes::Value, "size=QUANTITY (e.g. size=1Gi)"),
    key(Key::AccessMode, "access-mode", &[], PVC, Takes::Values, "access-mode=MODE (e.g. access-mode=ReadWriteOnce)"),
    key(Key::Source, "source", &["src"], HOST, Takes::Value, "source=PATH"),
    key(Key::Server, "server", &[], NFS, Takes::Value, "server=HOST"),
    key(Key::Path, "path", &[], NFS, Takes::Value, "path=PATH"),
    key(Key::NfsOpt, "nfs-opt", &[], NFS, Takes::Values, "nfs-opt=OPTION (e.g. nfs-opt=vers=4.1)"),
    key(Key::Bucket, "bucket", &[], OSSFS, Takes::Value, "bucket=NAME"),
    key(Key::Endpoint, "endpoint", &[], OSSFS, Takes::Value, "endpoint=HOST"),
    key(Key::Version, "version", &[], OSSFS, Takes::Value, "version=1.0|2.0"),
    key(Key::OssfsOpt, "ossfs-opt", &[], OSSFS, Takes::Values, "ossfs-opt=OPTION (e.g. ossfs-opt=kernel_cache)"),
    key(Key::AccessKeyId, "access-key-id", &[], OSSFS, Takes::Value, "access-key-id=ID or access-key-id-env=VAR"),
    key(Key::AccessKeyIdEnv, "access-key-id-env", &[], OSSFS, Takes::Value, "access-key-id-env=VAR"),
    key(Key::SecretEnv, "secret-env", &[], OSSFS, Takes::Value, "secret-env=VAR or secret-file=PATH"),
    key(Key::SecretFile, "secret-file", &[], OSSFS, Takes::Value, "secret-file=PATH"),
];

impl Key {
    fn info(self) -> &'static KeyInfo {
        // Every variant has a row; the fallback only keeps this total without a panic.
        KEYS.iter().find(|k| k.key == self).unwrap_or(&KEYS[0])
    }

    fn name(self) -> &'static str {
        self.info().name
    }

    /// The key whose presence alone says which backend a volume is.
    fn implied_type(self) -> Option<VolumeBackendKind> {
        match self {
            Self::Claim => PVC,
            Self::Source => HOST,
            Self::Server => NFS,
            Self::Bucket => OSSFS,
            _ => None,
        }
    }
}

/// The key spelled `spelled` (lowercase), with its canonical name or an alias.
fn lookup(spelled: &str) -> Option<&'static KeyInfo> {
    KEYS.iter()
        .find(|k| k.name == spelled || k.aliases.contains(&spelled))
}

/// Whether an unknown key looks like one meant to carry a secret.
fn names_a_secret(spelled: &str) -> bool {
    let squashed: String = spelled
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    ["secret", "password", "passwd"]
        .iter()
        .any(|word| squashed.contains(word))
}

/// The known key (name or alias) closest to `spelled`, if it is close enough to be a typo.
fn suggest(spelled: &str) -> Option<&'static str> {
    KEYS.iter()
        .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
        .map(|candidate| (edit_distance(spelled, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2 && *distance < candidate.len() / 2 + 1)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, on chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn parse_type(value: &str) -> Result<VolumeBackendKind, VolumeSpecError> {
    VolumeBackendKind::ALL
        .into_iter()
        .find(|kind| kind.as_str().eq_ignore_ascii_case(value))
        .ok_or_else(|| VolumeSpecError::UnknownType {
            value: value.to_owned(),
        })
}

/// One field of a spec, checked against its key.
struct Field {
    key: Key,
    /// The key as written, lowercased: errors name it so.
    spelled: String,
    value: FieldValue,
}

enum FieldValue {
    Text(String),
    Flag(bool),
}

/// The fields of one spec, each non-repeatable key at most once.
struct Fields(Vec<Field>);

impl Fields {
    fn text(&self, key: Key) -> Option<String> {
        self.texts(key).next()
    }

    fn texts(&self, key: Key) -> impl Iterator<Item = String> + '_ {
        self.0
            .iter()
            .filter(move |f| f.key == key)
            .filter_map(|f| match &f.value {
                FieldValue::Text(v) => Some(v.clone()),
                FieldValue::Flag(_) => None,
            })
    }

    fn flag(&self, key: Key) -> Option<bool> {
        self.0
            .iter()
            .filter(|f| f.key == key)
            .find_map(|f| match f.value {
                FieldValue::Flag(b) => Some(b),
                FieldValue::Text(_) => None,
            })
    }

    fn required(&self, key: Key, kind: VolumeBackendKind) -> Result<String, VolumeSpecError> {
        self.text(key).ok_or(VolumeSpecError::MissingKey {
            key: key.name(),
            example: key.info().example,
            volume_type: kind,
        })
    }
}

/// Splits a spec into its CSV fields.
fn split_fields(s: &str) -> Result<Vec<String>, VolumeSpecError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(s.as_bytes());
    let mut records = reader.records();
    let record = match records.next() {
        None => return Err(VolumeSpecError::Empty),
        // Reading a `&str` cannot fail on I/O or UTF-8; anything else is a malformed line.
        Some(Err(_)) => return Err(VolumeSpecError::MultipleLines),
        Some(Ok(record)) => record,
    };
    if records.next().is_some() {
        return Err(VolumeSpecError::MultipleLines);
    }
    Ok(record.iter().map(str::to_owned).collect())
}

/// Checks each field against its key: known, no secret, a value of the right kind, not repeated.
fn check_fields(raw: Vec<String>) -> Result<Fields, VolumeSpecError> {
    let mut fields: Vec<Field> = Vec::with_capacity(raw.len());
    for (i, field) in raw.into_iter().enumerate() {
        if field.trim().is_empty() {
            return Err(VolumeSpecError::EmptyField { position: i + 1 });
        }
        let (spelled, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        if spelled.is_empty() {
            return Err(VolumeSpecError::NoKey { field });
        }
        let Some(info) = lookup(&spelled) else {
            if names_a_secret(&spelled) {
                return Err(VolumeSpecError::SecretOnCommandLine { key: spelled });
            }
            let suggestion = suggest(&spelled);
            return Err(VolumeSpecError::UnknownKey {
                key: spelled,
                suggestion,
            });
        };
        let value = match (info.takes, value) {
            (Takes::Flag, None) => FieldValue::Flag(true),
            (Takes::Flag, Some(v)) => match parse_bool(v) {
                Some(b) => FieldValue::Flag(b),
                None => {
                    return Err(VolumeSpecError::InvalidFlag {
                        key: spelled,
                        value: v.to_owned(),
                    });
                }
            },
            (Takes::Value | Takes::Values, None) => {
                return Err(VolumeSpecError::MissingValue {
                    key: spelled,
                    example: info.example,
                });
            }
            (Takes::Value | Takes::Values, Some(v)) if v.trim().is_empty() => {
                return Err(VolumeSpecError::EmptyValue {
                    key: spelled,
                    example: info.example,
                });
            }
            (Takes::Value | Takes::Values, Some(v)) => FieldValue::Text(v.to_owned()),
        };
        if info.takes != Takes::Values
            && let Some(first) = fields.iter().find(|f| f.key == info.key)
        {
            return Err(VolumeSpecError::DuplicateKey {
                key: spelled,
                first: first.spelled.clone(),
            });
        }
        fields.push(Field {
            key: info.key,
            spelled,
            value,
        });
    }
    for (a, b) in [
        (Key::AccessKeyId, Key::AccessKeyIdEnv),
        (Key::SecretEnv, Key::SecretFile),
    ] {
        if let (Some(fa), Some(fb)) = (
            fields.iter().position(|f| f.key == a),
            fields.iter().position(|f| f.key == b),
        ) {
            let (first, second) = (fa.min(fb), fa.max(fb));
            return Err(VolumeSpecError::Conflict {
                first: fields[first].spelled.clone(),
                second: fields[second].spelled.clone(),
            });
        }
    }
    Ok(Fields(fields))
}

/// The volume's type: given, or implied by the one backend's source key present.
fn volume_type(fields: &Fields) -> Result<VolumeBackendKind, VolumeSpecError> {
    if let Some(given) = fields.text(Key::Type) {
        return parse_type(&given);
    }
    let implying: Vec<&Field> = fields
        .0
        .iter()
        .filter(|f| f.key.implied_type().is_some())
        .collect();
    match implying.as_slice() {
        [] => Err(VolumeSpecError::MissingType),
        [one] => one.key.implied_type().ok_or(VolumeSpecError::MissingType),
        several => Err(VolumeSpecError::AmbiguousType {
            keys: several.iter().map(|f| f.spelled.clone()).collect(),
        }),
    }
}

impl FromStr for VolumeSpec {
    type Err = VolumeSpecError;

    fn from_str(s: &str) -> Result<Self, VolumeSpecError> {
        let fields = check_fields(split_fields(s)?)?;
        let kind = volume_type(&fields)?;
        if let Some(field) = fields
            .0
            .iter()
            .find(|f| f.key.info().backend.is_some_and(|b| b != kind))
        {
            return Err(VolumeSpecError::WrongBackend {
                key: field.spelled.clone(),
                key_type: field.key.info().backend.unwrap_or(kind),
                volume_type: kind,
            });
        }
        let target = fields.required(Key::Target, kind)?;
        let backend = match kind {
            VolumeBackendKind::Pvc => VolumeBackend::Pvc(PvcSpec {
                claim: fields.required(Key::Claim, kind)?,
                create: fields.flag(Key::Create).unwrap_or(true),
                delete_on_termination: fields.flag(Key::DeleteOnTermination).unwrap_or(false),
                storage_class: fields.text(Key::StorageClass),
                size: fields.text(Key::Size),
                access_modes: fields.texts(Key::AccessMode).collect(),
            }),
            VolumeBackendKind::Host => VolumeBackend::Host(HostSpec {
                source: fields.required(Key::Source, kind)?,
            }),
            VolumeBackendKind::Nfs => VolumeBackend::Nfs(NfsSpec {
                server: fields.required(Key::Server, kind)?,
                path: fields.required(Key::Path, kind)?,
                options: fields.texts(Key::NfsOpt).collect(),
            }),
            VolumeBackendKind::Ossfs => {
                let bucket = fields.required(Key::Bucket, kind)?;
                let endpoint = fields.required(Key::Endpoint, kind)?;
                // Without a key naming them, the credentials come from the variables Alibaba
                // Cloud's own tools read.
                let access_key_id = match (
                    fields.text(Key::AccessKeyIdEnv),
                    fields.text(Key::AccessKeyId),
                ) {
                    (Some(var), _) => AccessKeyId::Env(var),
                    (None, Some(id)) => AccessKeyId::Value(id),
                    (None, None) => AccessKeyId::Env(DEFAULT_ACCESS_KEY_ID_ENV.to_owned()),
                };
                let secret = match (fields.text(Key::SecretFile), fields.text(Key::SecretEnv)) {
                    (Some(path), _) => SecretRef::File(path),
                    (None, Some(var)) => SecretRef::Env(var),
                    (None, None) => SecretRef::Env(DEFAULT_SECRET_ENV.to_owned()),
                };
                VolumeBackend::Ossfs(OssfsSpec {
                    bucket,
                    endpoint,
                    version: fields.text(Key::Version),
                    options: fields.texts(Key::OssfsOpt).collect(),
                    access_key_id,
                    secret,
                })
            }
        };
        Ok(VolumeSpec {
            name: fields.text(Key::Name),
            target,
            sub_path: fields.text(Key::SubPath),
            read_only: fields.flag(Key::ReadOnly).unwrap_or(false),
            backend,
        })
    }
}

impl VolumeSpec {
    /// The volume's backend type.
    pub fn kind(&self) -> VolumeBackendKind {
        match &self.backend {
            VolumeBackend::Pvc(_) => VolumeBackendKind::Pvc,
            VolumeBackend::Host(_) => VolumeBackendKind::Host,
            VolumeBackend::Nfs(_) => VolumeBackendKind::Nfs,
            VolumeBackend::Ossfs(_) => VolumeBackendKind::Ossfs,
        }
    }

    /// The `name` the volume gets on the wire: its own, or the one derived from its target.
    pub fn effective_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| derive_name(&self.target))
    }

    /// The canonical fields, in the order `Display` writes them.
    fn fields(&self) -> Vec<String> {
        let pair = |key: Key, value: &str| format!("{}={value}", key.name());
        let mut out = vec![pair(Key::Type, self.kind().as_str())];
        out.extend(self.name.iter().map(|name| pair(Key::Name, name)));
        match &self.backend {
            VolumeBackend::Pvc(p) => out.push(pair(Key::Claim, &p.claim)),
            VolumeBackend::Host(h) => out.push(pair(Key::Source, &h.source)),
            VolumeBackend::Nfs(n) => {
                out.push(pair(Key::Server, &n.server));
                out.push(pair(Key::Path, &n.path));
            }
            VolumeBackend::Ossfs(o) => {
                out.push(pair(Key::Bucket, &o.bucket));
                out.push(pair(Key::Endpoint, &o.endpoint));
            }
        }
        out.push(pair(Key::Target, &self.target));
        out.extend(self.sub_path.iter().map(|s| pair(Key::SubPath, s)));
        if self.read_only {
            out.push(Key::ReadOnly.name().to_owned());
        }
        match &self.backend {
            VolumeBackend::Pvc(p) => {
                if !p.create {
                    out.push(pair(Key::Create, "false"));
                }
                if p.delete_on_termination {
                    out.push(Key::DeleteOnTermination.name().to_owned());
                }
                out.extend(p.storage_class.iter().map(|c| pair(Key::StorageClass, c)));
                out.extend(p.size.iter().map(|s| pair(Key::Size, s)));
                out.extend(p.access_modes.iter().map(|m| pair(Key::AccessMode, m)));
            }
            VolumeBackend::Host(_) => {}
            VolumeBackend::Nfs(n) => {
                out.extend(n.options.iter().map(|o| pair(Key::NfsOpt, o)));
            }
            VolumeBackend::Ossfs(o) => {
                out.extend(o.version.iter().map(|v| pair(Key::Version, v)));
                out.extend(o.options.iter().map(|opt| pair(Key::OssfsOpt, opt)));
                out.push(match &o.access_key_id {
                    AccessKeyId::Value(id) => pair(Key::AccessKeyId, id),
                    AccessKeyId::Env(var) => pair(Key::AccessKeyIdEnv, var),
                });
                out.push(match &o.secret {
                    SecretRef::Env(var) => pair(Key::SecretEnv, var),
                    SecretRef::File(path) => pair(Key::SecretFile, path),
                });
            }
        }
        out
    }

    /// The `volumes[]` item of a create request (Berth's form), with the credentials an ossfs
    /// spec refers to looked up in `secrets`. Without a `name`, the one derived from the target
    /// is used: call [`assign_names`] first when a request has several volumes.
    pub fn to_wire(&self, secrets: &dyn SecretSource) -> Result<wire::Volume, VolumeSpecError> {
        let mut volume = wire::Volume {
            name: self.effective_name(),
            host: None,
            pvc: None,
            ossfs: None,
            nfs: None,
            persistent_volume_claim: None,
            host_path: None,
            mount_path: Some(self.target.clone()),
            read_only: self.read_only,
            sub_path: self.sub_path.clone(),
        };
        let list = |items: &[String]| (!items.is_empty()).then(|| items.to_vec());
        match &self.backend {
            VolumeBackend::Pvc(p) => {
                volume.pvc = Some(wire::PvcBackend {
                    claim_name: p.claim.clone(),
                    create_if_not_exists: p.create,
                    delete_on_sandbox_termination: p.delete_on_termination,
                    storage_class: p.storage_class.clone(),
                    storage: p.size.clone(),
                    access_modes: list(&p.access_modes),
                });
            }
            VolumeBackend::Host(h) => {
                volume.host = Some(wire::HostBackend {
                    path: h.source.clone(),
                });
            }
            VolumeBackend::Nfs(n) => {
                volume.nfs = Some(wire::NfsBackend {
                    server: n.server.clone(),
                    path: n.path.clone(),
                    options: list(&n.options),
                    // `readonly` sets the volume's flag; this one is the Kubernetes form's.
                    read_only: false,
                });
            }
            VolumeBackend::Ossfs(o) => {
                let access_key_id = match &o.access_key_id {
                    AccessKeyId::Value(id) => id.clone(),
                    AccessKeyId::Env(var) => env_credential(secrets, Key::AccessKeyIdEnv, var)?,
                };
                let access_key_secret = match &o.secret {
                    SecretRef::Env(var) => env_credential(secrets, Key::SecretEnv, var)?,
                    SecretRef::File(path) => file_credential(secrets, Key::SecretFile, path)?,
                };
                volume.ossfs = Some(wire::OssfsBackend {
                    bucket: o.bucket.clone(),
                    endpoint: o.endpoint.clone(),
                    version: o.version.clone(),
                    options: list(&o.options),
                    access_key_id,
                    access_key_secret,
                });
            }
        }
        Ok(volume)
    }

    /// The spec of a `volumes[]` item of Berth's form, to show a request in compact form. The
    /// name is left out when it is the one derived from the target. Refused
    /// ([`VolumeSpecError::FromWire`]): ossfs volumes (their credentials are values; a spec holds
    /// only references), Kubernetes-form volumes, volumes without a mount path or with other than
    /// one backend, and blank values (which the compact form cannot write).
    pub fn from_wire(volume: &wire::Volume) -> Result<Self, VolumeSpecError> {
        let refuse = |reason: String| VolumeSpecError::FromWire {
            volume: volume.name.clone(),
            reason,
        };
        let text = |value: &str, field: &str, key: Key| {
            if value.trim().is_empty() {
                Err(refuse(format!(
                    "its {field} is empty, which {} cannot say",
                    key.name()
                )))
            } else {
                Ok(value.to_owned())
            }
        };
        let texts = |values: &Option<Vec<String>>, field: &str, key: Key| {
            values
                .iter()
                .flatten()
                .map(|v| text(v, field, key))
                .collect::<Result<Vec<String>, _>>()
        };
        if volume.persistent_volume_claim.is_some() || volume.host_path.is_some() {
            return Err(refuse(
                "it is in the Kubernetes form (persistentVolumeClaim or hostPath, mounted through the request's mounts); the compact form writes Berth's form".to_owned(),
            ));
        }
        let Some(mount_path) = &volume.mount_path else {
            return Err(refuse("it has no mountPath".to_owned()));
        };
        let target = text(mount_path, "mountPath", Key::Target)?;
        let backend = match (&volume.pvc, &volume.host, &volume.nfs, &volume.ossfs) {
            (Some(p), None, None, None) => VolumeBackend::Pvc(PvcSpec {
                claim: text(&p.claim_name, "pvc.claimName", Key::Claim)?,
                create: p.create_if_not_exists,
                delete_on_termination: p.delete_on_sandbox_termination,
                storage_class: p
                    .storage_class
                    .as_deref()
                    .map(|s| text(s, "pvc.storageClass", Key::StorageClass))
                    .transpose()?,
                size: p
                    .storage
                    .as_deref()
                    .map(|s| text(s, "pvc.storage", Key::Size))
                    .transpose()?,
                access_modes: texts(&p.access_modes, "pvc.accessModes[]", Key::AccessMode)?,
            }),
            (None, Some(h), None, None) => VolumeBackend::Host(HostSpec {
                source: text(&h.path, "host.path", Key::Source)?,
            }),
            (None, None, Some(n), None) => VolumeBackend::Nfs(NfsSpec {
                server: text(&n.server, "nfs.server", Key::Server)?,
                path: text(&n.path, "nfs.path", Key::Path)?,
                options: texts(&n.options, "nfs.options[]", Key::NfsOpt)?,
            }),
            (None, None, None, Some(_)) => {
                return Err(refuse(
                    "it is an ossfs volume, whose access key the compact form never holds; write it with access-key-id=ID (or access-key-id-env=VAR) and secret-env=VAR or secret-file=PATH".to_owned(),
                ));
            }
            _ => {
                return Err(refuse(
                    "it does not name exactly one of pvc, host, nfs, ossfs".to_owned(),
                ));
            }
        };
        let sub_path = match volume.sub_path.as_deref() {
            // An empty subPath means the backend's root, as no subpath does.
            None | Some("") => None,
            Some(s) => Some(text(s, "subPath", Key::SubPath)?),
        };
        let name = text(&volume.name, "name", Key::Name)?;
        let read_only = volume.read_only || volume.nfs.as_ref().is_some_and(|n| n.read_only);
        Ok(VolumeSpec {
            name: (name != derive_name(&target)).then_some(name),
            target,
            sub_path,
            read_only,
            backend,
        })
    }
}

impl fmt::Display for VolumeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::Any(b'\n'))
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(Vec::new());
        writer.write_record(self.fields()).map_err(|_| fmt::Error)?;
        let bytes = writer.into_inner().map_err(|_| fmt::Error)?;
        let line = String::from_utf8(bytes).map_err(|_| fmt::Error)?;
        f.write_str(line.strip_suffix('\n').unwrap_or(&line))
    }
}

/// A credential from environment variable `var`, named by `key`.
fn env_credential(
    secrets: &dyn SecretSource,
    key: Key,
    var: &str,
) -> Result<String, VolumeSpecError> {
    let value = secrets.env_var(var).map_err(|e| match e {
        std::env::VarError::NotPresent => VolumeSpecError::EnvVarMissing {
            key: key.name(),
            var: var.to_owned(),
        },
        std::env::VarError::NotUnicode(_) => VolumeSpecError::EnvVarNotUnicode {
            key: key.name(),
            var: var.to_owned(),
        },
    })?;
    if value.is_empty() {
        return Err(VolumeSpecError::EmptyCredential {
            key: key.name(),
            origin: format!("environment variable {var:?}"),
        });
    }
    Ok(value)
}

/// A credential from the file at `path`, named by `key`, without its trailing line break.
fn file_credential(
    secrets: &dyn SecretSource,
    key: Key,
    path: &str,
) -> Result<String, VolumeSpecError> {
    let content =
        secrets
            .read_file(Path::new(path))
            .map_err(|source| VolumeSpecError::SecretFile {
                key: key.name(),
                path: path.to_owned(),
                source,
            })?;
    let value = content
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&content);
    if value.is_empty() {
        return Err(VolumeSpecError::EmptyCredential {
            key: key.name(),
            origin: format!("the file {path:?}"),
        });
    }
    Ok(value.to_owned())
}

/// The volume name derived from a target: lowercased, each run of characters other than ASCII
/// letters and digits made one `-`, trimmed of `-`, cut to 63 characters (a DNS label, as volume
/// names must be); `volume` when nothing is left.
pub fn derive_name(target: &str) -> String {
    let mut name = String::with_capacity(target.len().min(MAX_NAME_LEN));
    let mut gap = false;
    for c in target.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if gap && !name.is_empty() {
                name.push('-');
            }
            gap = false;
            name.push(c);
        } else {
            gap = true;
        }
        if name.len() >= MAX_NAME_LEN {
            break;
        }
    }
    name.truncate(MAX_NAME_LEN);
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        name.to_owned()
    }
}

/// Gives every spec without a name its derived one ([`derive_name`]), made unique within
/// `specs`: the first volume deriving `workspace` gets it, the next `workspace-2`, then
/// `workspace-3`, … (cut to stay within 63 characters). A derived name never takes a name given
/// explicitly anywhere in `specs`, and explicit names are never changed (two equal explicit names
/// stay equal, for the server to refuse). The result depends only on the order of `specs`.
pub fn assign_names(specs: &mut [VolumeSpec]) {
    assign_names_beside(specs, std::iter::empty());
}

/// [`assign_names`] for specs that join volumes named `others` (a request file's): no derived
/// name takes one of theirs either.
pub fn assign_names_beside(specs: &mut [VolumeSpec], others: impl IntoIterator<Item = String>) {
    let mut taken: BTreeSet<String> = specs.iter().filter_map(|s| s.name.clone()).collect();
    taken.extend(others);
    for spec in specs.iter_mut().filter(|s| s.name.is_none()) {
        let base = derive_name(&spec.target);
        let mut n = 1;
        let name = loop {
            let candidate = numbered_name(&base, n);
            if !taken.contains(&candidate) {
                break candidate;
            }
            n += 1;
        };
        taken.insert(name.clone());
        spec.name = Some(name);
    }
}

/// `base` for `n == 1`, else `base-n` with `base` cut so the result keeps within 63 characters.
fn numbered_name(base: &str, n: usize) -> String {
    if n == 1 {
        return base.to_owned();
    }
    let suffix = format!("-{n}");
    // `base` is ASCII (from `derive_name`), so any cut is on a char boundary.
    let keep = base.len().min(MAX_NAME_LEN.saturating_sub(suffix.len()));
    format!("{}{suffix}", base[..keep].trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly by design.

    use super::*;

    #[test]
    fn every_key_and_alias_is_in_the_documented_table() {
        let source = include_str!("volume_spec.rs");
        let table: Vec<Vec<&str>> = source
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .map(|row| row.split('|').map(str::trim).collect())
            .collect();
        assert_eq!(table.len(), KEYS.len(), "one table row per key");
        for (cells, info) in table.iter().zip(KEYS) {
            assert_eq!(cells[0], format!("{}`", info.name));
            let aliases: Vec<String> = info.aliases.iter().map(|a| format!("`{a}`")).collect();
            assert_eq!(cells[1], aliases.join(", "), "aliases of {}", info.name);
            let backend = info.backend.map_or("all", VolumeBackendKind::as_str);
            assert_eq!(cells[2], backend, "type of {}", info.name);
        }
    }

    #[test]
    fn every_key_has_one_row_and_no_spelling_is_shared() {
        let mut spellings = BTreeSet::new();
        for info in KEYS {
            assert!(std::ptr::eq(info.key.info(), info), "{}", info.name);
            for spelling in std::iter::once(info.name).chain(info.aliases.iter().copied()) {
                assert!(spellings.insert(spelling), "{spelling} twice");
                assert!(!names_a_secret(spelling) || info.backend == OSSFS);
            }
        }
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("targt", "target"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(suggest("targt"), Some("target"));
        assert_eq!(suggest("readonyl"), Some("readonly"));
        assert_eq!(suggest("zzzzzz"), None);
    }

    #[test]
    fn numbered_names_stay_dns_labels() {
        let base = "a".repeat(61) + "-b";
        let base = derive_name(&base);
        assert_eq!(base.len(), 63);
        for n in [2, 10, 1000] {
            let name = numbered_name(&base, n);
            assert!(name.len() <= 63, "{name}");
            assert!(berth_core::model::is_dns_label(&name), "{name}");
            assert!(name.ends_with(&format!("-{n}")));
        }
        // A cut that would end on '-' drops it.
        let base = format!("{}-x", "a".repeat(60));
        assert_eq!(numbered_name(&base, 2), format!("{}-2", "a".repeat(60)));
    }
}

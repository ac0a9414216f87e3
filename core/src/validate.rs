//! Request validation: `wire` in, `model` out, or **every** violation at once, each with its
//! field path (`volumes[1].subPath`), a stable code and a message a user can act on.
//!
//! Validation is pure and runs once, before any runtime sees the request. Rules that need the
//! filesystem or the engine (symlinks, missing claims, images) are the runtimes'.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::error_code::ErrorCode;
use crate::model::{
    AccessMode, ByteQuantity, ClaimName, CpuLimit, Entrypoint, EnvName, HostPath, ImageRef,
    InvalidValue, Metadata, MetadataKey, MetadataPatch, MetadataValue, MountOption, MountPath,
    NfsExportPath, NfsServer, NfsSource, OssBucket, OssCredentials, OssEndpoint, OssfsSource,
    OssfsVersion, PvcSource, RegistryAuth, ResourceLimits, SandboxSpec, StorageClassName, SubPath,
    Volume, VolumeName, VolumeSource, lexical_key, memory_limit, quoted,
};
use crate::wire;

/// Most volumes one request may carry.
pub const MAX_VOLUMES: usize = 64;
/// Most metadata entries one sandbox may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Most environment variables one request may carry.
pub const MAX_ENV_ENTRIES: usize = 256;
/// Shortest timeout, in seconds.
pub const MIN_TIMEOUT_SECONDS: i64 = 60;

/// One broken rule: where, which, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Field path in the request, e.g. `volumes[1].subPath`.
    pub field: String,
    /// Stable code.
    pub code: ErrorCode,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Violation {
    /// Builds a violation.
    pub fn new(field: impl Into<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    fn from_invalid(field: impl Into<String>, invalid: InvalidValue) -> Self {
        Self::new(field, invalid.code, invalid.reason)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every violation of one request, in request-field order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Wraps one violation.
    pub fn one(violation: Violation) -> Self {
        Self(vec![violation])
    }

    /// Wraps a list; `None` when it is empty (nothing was violated).
    pub fn from_vec(violations: Vec<Violation>) -> Option<Self> {
        (!violations.is_empty()).then_some(Self(violations))
    }

    /// The violations, in order.
    pub fn as_slice(&self) -> &[Violation] {
        &self.0
    }

    /// The first violation's code: the code of the response.
    pub fn code(&self) -> ErrorCode {
        self.0[0].code
    }

    /// The error body of the wire contract (ARCHITECTURE.md): the first violation's code, and a message listing
    /// every violation with its field path.
    pub fn to_error_response(&self) -> wire::ErrorResponse {
        wire::ErrorResponse {
            code: self.code().as_str().to_owned(),
            message: self.to_string(),
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// The server's rules that a request is checked against (from configuration and the runtime).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoragePolicy {
    /// Host directories under which `host` volumes may be mounted (`storage.allowed_host_paths`).
    /// Empty disables the host backend.
    pub allowed_host_roots: Vec<HostPath>,
    /// Longest `timeout` accepted (`server.max_sandbox_timeout_seconds`); `None` means no maximum.
    pub max_timeout_seconds: Option<u64>,
}

/// Collects violations while a request is converted.
#[derive(Default)]
struct Collector(Vec<Violation>);

impl Collector {
    fn push(&mut self, field: impl Into<String>, code: ErrorCode, message: impl Into<String>) {
        self.0.push(Violation::new(field, code, message));
    }

    /// Keeps `Ok` values of an owned-string constructor, records `Err` ones under `field`.
    fn take<T>(
        &mut self,
        field: impl FnOnce() -> String,
        result: Result<T, (InvalidValue, String)>,
    ) -> Option<T> {
        self.check(field, result.map_err(|(e, _)| e))
    }

    /// Keeps `Ok` values, records `Err` ones under `field`.
    fn check<T>(
        &mut self,
        field: impl FnOnce() -> String,
        result: Result<T, InvalidValue>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(Violation::from_invalid(field(), e));
                None
            }
        }
    }
}

fn map_field(map: &str, key: &str) -> String {
    format!("{map}[{}]", quoted(key))
}

impl SandboxSpec {
    /// Validates a create request against `policy`: the spec, or every violation.
    pub fn from_request(
        request: wire::CreateSandboxRequest,
        policy: &StoragePolicy,
    ) -> Result<Self, Violations> {
        let mut c = Collector::default();
        let image = check_source(&mut c, &request);
        check_unsupported(&mut c, &request);
        let entrypoint = check_entrypoint(&mut c, request.image.is_some(), request.entrypoint);
        let timeout_seconds = check_timeout(&mut c, request.timeout, policy);
        let resources = check_resources(&mut c, request.resource_limits);
        let env = check_env(&mut c, request.env.unwrap_or_default());
        let metadata = check_metadata(&mut c, request.metadata.unwrap_or_default());
        let volumes = check_volumes(
            &mut c,
            request.volumes.unwrap_or_default(),
            request.mounts.unwrap_or_default(),
            policy,
        );
        if let Some(violations) = Violations::from_vec(c.0) {
            return Err(violations);
        }
        // Every `None` below was recorded as a violation above, so reaching here means all are `Some`.
        match (image, entrypoint, resources) {
            (Some(image), Some(entrypoint), Some(resources)) => Ok(SandboxSpec {
                image,
                entrypoint,
                platform: request.platform,
                timeout_seconds,
                resources,
                env,
                metadata,
                volumes,
            }),
            _ => Err(Violations::one(Violation::new(
                "",
                ErrorCode::GeneralInternalError,
                "validation produced no value and no violation",
            ))),
        }
    }
}

impl TryFrom<(wire::CreateSandboxRequest, &StoragePolicy)> for SandboxSpec {
    type Error = Violations;

    fn try_from(
        (request, policy): (wire::CreateSandboxRequest, &StoragePolicy),
    ) -> Result<Self, Violations> {
        Self::from_request(request, policy)
    }
}

fn check_image_uri(uri: &str) -> Result<(), InvalidValue> {
    let code = ErrorCode::SandboxInvalidParameter;
    if uri.trim().is_empty() {
        return Err(InvalidValue::new(code, "must not be blank"));
    }
    if uri.len() > 1024 {
        return Err(InvalidValue::new(code, "is longer than 1024 bytes"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@+".contains(c);
    if !uri.chars().all(allowed) || !uri.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(InvalidValue::new(
            code,
            format!(
                "{} is not an image reference such as \"python:3.11\" or \"registry:5000/team/app@sha256:…\"",
                quoted(uri)
            ),
        ));
    }
    Ok(())
}

fn check_source(c: &mut Collector, request: &wire::CreateSandboxRequest) -> Option<ImageRef> {
    match (&request.image, &request.snapshot_id) {
        (Some(_), Some(_)) => {
            c.push(
                "image",
                ErrorCode::SandboxInvalidParameter,
                "give exactly one of image and snapshotId, not both",
            );
            None
        }
        (None, Some(_)) => {
            c.push(
                "snapshotId",
                ErrorCode::SandboxUnsupportedFeature,
                "restoring from a snapshot is not implemented by Berth; give image instead",
            );
            None
        }
        (None, None) => {
            c.push(
                "image",
                ErrorCode::SandboxInvalidParameter,
                "required: give image (or snapshotId)",
            );
            None
        }
        (Some(image), None) => {
            let uri_ok = c
                .check(|| "image.uri".into(), check_image_uri(&image.uri))
                .is_some();
            let auth = match &image.auth {
                None => Some(None),
                Some(wire::ImageAuth {
                    username: Some(username),
                    password: Some(password),
                }) if !username.is_empty() && !password.is_empty() => Some(Some(RegistryAuth {
                    username: username.clone(),
                    password: password.clone(),
                })),
                Some(_) => {
                    c.push(
                        "image.auth",
                        ErrorCode::SandboxInvalidParameter,
                        "give both a non-empty username and password, or omit auth",
                    );
                    None
                }
            };
            match (uri_ok, auth) {
                (true, Some(auth)) => Some(ImageRef {
                    uri: image.uri.clone(),
                    auth,
                }),
                _ => None,
            }
        }
    }
}

fn check_entrypoint(
    c: &mut Collector,
    has_image: bool,
    entrypoint: Option<Vec<String>>,
) -> Option<Entrypoint> {
    match entrypoint {
        None if has_image => {
            c.push(
                "entrypoint",
                ErrorCode::SandboxInvalidParameter,
                "required with image, e.g. [\"python\", \"/app/main.py\"]",
            );
            None
        }
        None => None,
        Some(argv) => c.check(|| "entrypoint".into(), Entrypoint::new(argv)),
    }
}

fn check_timeout(c: &mut Collector, timeout: Option<i64>, policy: &StoragePolicy) -> Option<u64> {
    let t = timeout?;
    if t < MIN_TIMEOUT_SECONDS {
        c.push(
            "timeout",
            ErrorCode::SandboxInvalidParameter,
            format!(
                "must be at least {MIN_TIMEOUT_SECONDS} seconds (got {t}); omit it for no expiry"
            ),
        );
        return None;
    }
    let t = t.unsigned_abs();
    if let Some(max) = policy.max_timeout_seconds
        && t > max
    {
        c.push(
            "timeout",
            ErrorCode::SandboxInvalidParameter,
            format!("must be at most {max} seconds, this server's server.max_sandbox_timeout_seconds (got {t})"),
        );
        return None;
    }
    Some(t)
}

fn check_resources(
    c: &mut Collector,
    limits: Option<BTreeMap<String, String>>,
) -> Option<ResourceLimits> {
    let Some(limits) = limits else {
        c.push(
            "resourceLimits",
            ErrorCode::SandboxInvalidParameter,
            "required, e.g. {\"cpu\": \"500m\", \"memory\": \"512Mi\"} ({} for no limits)",
        );
        return None;
    };
    let mut resources = ResourceLimits::default();
    for (key, value) in &limits {
        let field = || map_field("resourceLimits", key);
        match key.as_str() {
            "cpu" => resources.cpu = c.check(field, CpuLimit::new(value)),
            "memory" => resources.memory = c.check(field, memory_limit(value)),
            // Zero GPUs is what Berth gives anyway; asking for some is refused below.
            "gpu" if value == "0" => {}
            _ => c.push(
                field(),
                ErrorCode::SandboxUnsupportedFeature,
                "Berth limits only cpu and memory",
            ),
        }
    }
    Some(resources)
}

fn check_env(c: &mut Collector, env: BTreeMap<String, String>) -> BTreeMap<EnvName, String> {
    if env.len() > MAX_ENV_ENTRIES {
        c.push(
            "env",
            ErrorCode::SandboxInvalidParameter,
            format!("at most {MAX_ENV_ENTRIES} entries (got {})", env.len()),
        );
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    for (key, value) in env {
        if value.contains('\0') {
            c.push(
                map_field("env", &key),
                ErrorCode::SandboxInvalidParameter,
                "the value must not contain NUL",
            );
            continue;
        }
        match EnvName::from_string(key) {
            Ok(name) => {
                out.insert(name, value);
            }
            Err((e, key)) => c.push(map_field("env", &key), e.code, e.reason),
        }
    }
    out
}

fn check_metadata(c: &mut Collector, metadata: BTreeMap<String, String>) -> Metadata {
    if metadata.len() > MAX_METADATA_ENTRIES {
        c.push(
            "metadata",
            ErrorCode::SandboxInvalidParameter,
            format!(
                "at most {MAX_METADATA_ENTRIES} entries (got {})",
                metadata.len()
            ),
        );
        return Metadata::new();
    }
    let mut out = Metadata::new();
    for (key, value) in metadata {
        let (k, key) = match MetadataKey::from_string(key) {
            Ok(k) => (Some(k), None),
            Err((e, key)) => {
                c.push(map_field("metadata", &key), e.code, e.reason);
                (None, Some(key))
            }
        };
        let v = match MetadataValue::from_string(value) {
            Ok(v) => Some(v),
            Err((e, _)) => {
                let key = k
                    .as_ref()
                    .map_or_else(|| key.unwrap_or_default(), |k| k.to_string());
                c.push(map_field("metadata", &key), e.code, e.reason);
                None
            }
        };
        if let (Some(k), Some(v)) = (k, v) {
            out.insert(k, v);
        }
    }
    out
}

/// Spec fields Berth does not implement: refused by name when they carry a non-default value.
fn check_unsupported(c: &mut Collector, r: &wire::CreateSandboxRequest) {
    const CODE: ErrorCode = ErrorCode::SandboxUnsupportedFeature;
    if let Some(policy) = &r.network_policy
        && (policy.default_action.is_some()
            || policy.egress.as_ref().is_some_and(|e| !e.is_empty()))
    {
        c.push(
            "networkPolicy",
            CODE,
            "egress network policies are not implemented by Berth; omit networkPolicy",
        );
    }
    if r.credential_proxy.as_ref().is_some_and(|p| p.enabled) {
        c.push(
            "credentialProxy.enabled",
            CODE,
            "the credential proxy is not implemented by Berth",
        );
    }
    if r.secure_access == Some(true) {
        c.push(
            "secureAccess",
            CODE,
            "secured endpoint access is not implemented by Berth; send false or omit it",
        );
    }
    for key in r.extensions.iter().flat_map(BTreeMap::keys) {
        c.push(
            map_field("extensions", key),
            CODE,
            "Berth implements no extensions",
        );
    }
    if r.template_id.is_some() {
        c.push(
            "templateId",
            CODE,
            "sandbox templates are not implemented by Berth",
        );
    }
    for key in r.resource_requests.iter().flat_map(BTreeMap::keys) {
        c.push(
            map_field("resourceRequests", key),
            CODE,
            "Berth sets limits only; use resourceLimits",
        );
    }
    if r.lifecycle.is_some() {
        c.push(
            "lifecycle",
            CODE,
            "lifecycle hooks are not implemented by Berth",
        );
    }
}

/// Field names of Berth's volume form, as they appear on a volume.
const BERTH_FORM_FIELDS: [&str; 6] = ["mountPath", "subPath", "readOnly", "host", "pvc", "ossfs"];

/// Which of Berth's form's fields a wire volume carries (`readOnly` only when true: `false` is
/// the default of both forms and changes nothing).
fn berth_form_fields(v: &wire::Volume) -> Vec<&'static str> {
    let present = [
        v.mount_path.is_some(),
        v.sub_path.is_some(),
        v.read_only,
        v.host.is_some(),
        v.pvc.is_some(),
        v.ossfs.is_some(),
    ];
    BERTH_FORM_FIELDS
        .into_iter()
        .zip(present)
        .filter_map(|(name, is_set)| is_set.then_some(name))
        .collect()
}

/// The Kubernetes-only field a wire volume carries, if any.
fn kubernetes_form_field(v: &wire::Volume) -> Option<&'static str> {
    if v.persistent_volume_claim.is_some() {
        Some("persistentVolumeClaim")
    } else if v.host_path.is_some() {
        Some("hostPath")
    } else {
        None
    }
}

/// The field that puts a request in the Kubernetes form (`mounts`, or the first volume with a
/// Kubernetes-only source); `None` for Berth's form.
fn kubernetes_form_trigger(
    volumes: &[wire::Volume],
    mounts: &[wire::VolumeMount],
) -> Option<String> {
    if !mounts.is_empty() {
        return Some("mounts".to_owned());
    }
    volumes
        .iter()
        .enumerate()
        .find_map(|(i, v)| kubernetes_form_field(v).map(|field| format!("volumes[{i}].{field}")))
}

/// For each item, the index of the first earlier item with the same key. At most 64 items, so a
/// linear scan beats hashing.
fn first_earlier<K: PartialEq>(keys: &[K]) -> Vec<Option<usize>> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| keys[..i].iter().position(|other| other == k))
        .collect()
}

/// Checks where and how one volume is mounted, in either form. `duplicate_of` names the earlier
/// entry that mounts at the same path, if any. `None` when the paths could not be made (a
/// reserved or repeated path is recorded but still returned).
fn check_mount(
    c: &mut Collector,
    mount_path: String,
    sub_path: Option<String>,
    field: &dyn Fn(&str) -> String,
    duplicate_of: Option<String>,
) -> Option<(MountPath, Option<SubPath>)> {
    let mount_path = match MountPath::from_string(mount_path) {
        Ok(path) => {
            if let Some(reason) = path.reserved_reason() {
                c.push(
                    field("mountPath"),
                    ErrorCode::VolumeReservedMountPath,
                    reason,
                );
            }
            Some(path)
        }
        Err((e, _)) => {
            c.push(field("mountPath"), e.code, e.reason);
            None
        }
    };
    if let Some(first) = duplicate_of {
        c.push(
            field("mountPath"),
            ErrorCode::VolumeDuplicateMountPath,
            format!("{first} mounts at the same path"),
        );
    }
    let sub_path = check_sub_path(c, sub_path, field);
    Some((mount_path?, sub_path?))
}

/// An optional subPath; `Some(None)` for none, `None` after recording a violation.
fn check_sub_path(
    c: &mut Collector,
    sub_path: Option<String>,
    field: &dyn Fn(&str) -> String,
) -> Option<Option<SubPath>> {
    match sub_path {
        // An empty subPath means the backend's root, as in Kubernetes.
        None => Some(None),
        Some(s) if s.is_empty() => Some(None),
        Some(s) => c
            .take(|| field("subPath"), SubPath::from_string(s))
            .map(Some),
    }
}

/// The volumes of a request in either form (see [`wire::Volume`]), as the model's one volume per
/// mount.
fn check_volumes(
    c: &mut Collector,
    volumes: Vec<wire::Volume>,
    mounts: Vec<wire::VolumeMount>,
    policy: &StoragePolicy,
) -> Vec<Volume> {
    for (field, len) in [("volumes", volumes.len()), ("mounts", mounts.len())] {
        if len > MAX_VOLUMES {
            c.push(
                field,
                ErrorCode::SandboxInvalidParameter,
                format!("at most {MAX_VOLUMES} {field} (got {len})"),
            );
            return Vec::new();
        }
    }
    match kubernetes_form_trigger(&volumes, &mounts) {
        None => check_berth_volumes(c, volumes, policy),
        Some(trigger) => check_kubernetes_volumes(c, volumes, mounts, &trigger, policy),
    }
}

/// Berth's form: each entry is one mount of one backend.
fn check_berth_volumes(
    c: &mut Collector,
    volumes: Vec<wire::Volume>,
    policy: &StoragePolicy,
) -> Vec<Volume> {
    // Duplicates first, while the volumes can still be borrowed. Mount paths compare by lexical
    // key, so `/data` and `/data/` (also refused as not normal) are reported as the duplicates
    // they are.
    let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    let first_with_name = first_earlier(&names);
    let keys: Vec<Option<Cow<'_, str>>> = volumes
        .iter()
        .map(|v| v.mount_path.as_deref().map(lexical_key))
        .collect();
    let first_with_mount_path: Vec<Option<usize>> = first_earlier(&keys)
        .into_iter()
        .zip(&keys)
        .map(|(first, key)| first.filter(|_| key.is_some()))
        .collect();
    drop(keys);

    let mut out = Vec::with_capacity(volumes.len());
    for (i, volume) in volumes.into_iter().enumerate() {
        let field = |name: &str| format!("volumes[{i}].{name}");
        let wire::Volume {
            name,
            host,
            pvc,
            ossfs,
            nfs,
            // Kubernetes-only sources put the request in the Kubernetes form: never set here.
            persistent_volume_claim: _,
            host_path: _,
            mount_path,
            read_only,
            sub_path,
        } = volume;

        let name = match VolumeName::from_string(name) {
            Ok(n) => Some(n),
            Err((e, _)) => {
                c.push(field("name"), e.code, e.reason);
                None
            }
        };
        if let Some(first) = first_with_name[i] {
            c.push(
                field("name"),
                ErrorCode::VolumeDuplicateName,
                format!("the name of volumes[{first}] is used again"),
            );
        }

        let mount = match mount_path {
            Some(mount_path) => check_mount(
                c,
                mount_path,
                sub_path,
                &field,
                first_with_mount_path[i].map(|first| format!("volumes[{first}]")),
            ),
            None => {
                c.push(
                    field("mountPath"),
                    ErrorCode::VolumeInvalidMountPath,
                    "required: the absolute path where the volume appears in the sandbox (or, Kubernetes-style, list where each volume is mounted in a top-level mounts)",
                );
                check_sub_path(c, sub_path, &field);
                None
            }
        };

        let source_read_only = nfs.as_ref().is_some_and(|n| n.read_only);
        let backends = Backends {
            host,
            pvc,
            ossfs,
            nfs,
        };
        let source = check_backend(c, backends, i, policy);

        if let (Some(name), Some(source), Some((mount_path, sub_path))) = (name, source, mount) {
            out.push(Volume {
                name,
                source,
                mount_path,
                sub_path,
                read_only: read_only || source_read_only,
            });
        }
    }
    out
}

/// The Kubernetes form: `volumes` name sources, `mounts` say where each is mounted; each mount
/// becomes one volume of the model, named as [`wire::Volume`] documents.
fn check_kubernetes_volumes(
    c: &mut Collector,
    volumes: Vec<wire::Volume>,
    mounts: Vec<wire::VolumeMount>,
    trigger: &str,
    policy: &StoragePolicy,
) -> Vec<Volume> {
    let names: Vec<String> = volumes.iter().map(|v| v.name.clone()).collect();
    let first_with_name = first_earlier(&names);
    // For each mount, the index of the volume it names (the first one with that name).
    let target: Vec<Option<usize>> = mounts
        .iter()
        .map(|m| names.iter().position(|n| *n == m.name))
        .collect();
    let keys: Vec<Cow<'_, str>> = mounts.iter().map(|m| lexical_key(&m.mount_path)).collect();
    let first_with_mount_path = first_earlier(&keys);
    drop(keys);

    // The sources, checked once per volume however often it is mounted, with their read-only
    // flag and name; `None` for a volume with a violation.
    let mut sources: Vec<Option<(VolumeName, VolumeSource, bool)>> =
        Vec::with_capacity(volumes.len());
    for (i, volume) in volumes.into_iter().enumerate() {
        let field = |name: &str| format!("volumes[{i}].{name}");
        let berth_fields = berth_form_fields(&volume);
        if let Some(first) = berth_fields.first() {
            let form = kubernetes_form_field(&volume).map_or_else(|| trigger.to_owned(), &field);
            c.push(
                field(first),
                ErrorCode::VolumeMixedForms,
                format!(
                    "{} belong to Berth's volume form, but this request uses the Kubernetes form ({form}); use one form: either every volume names host, pvc, ossfs or nfs and its own mountPath, or every volume names persistentVolumeClaim, hostPath or nfs and mounts says where it is mounted",
                    berth_fields.join(", ")
                ),
            );
            sources.push(None);
            continue;
        }
        let name = match VolumeName::from_string(volume.name) {
            Ok(n) => Some(n),
            Err((e, _)) => {
                c.push(field("name"), e.code, e.reason);
                None
            }
        };
        if let Some(first) = first_with_name[i] {
            c.push(
                field("name"),
                ErrorCode::VolumeDuplicateName,
                format!("the name of volumes[{first}] is used again"),
            );
        } else if !target.contains(&Some(i)) {
            c.push(
                field("name"),
                ErrorCode::VolumeNotMounted,
                "no entry of mounts names this volume; mount it (mounts: [{\"name\": …, \"mountPath\": …}]) or remove it",
            );
        }
        let source = check_kubernetes_source(
            c,
            volume.persistent_volume_claim,
            volume.host_path,
            volume.nfs,
            i,
            policy,
        );
        sources.push(match (name, source) {
            (Some(name), Some((source, read_only))) => Some((name, source, read_only)),
            _ => None,
        });
    }

    let mut out = Vec::with_capacity(mounts.len());
    // Names taken so far: every volume's own, then each derived one as it is given out.
    let mut taken: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), format!("volumes[{i}]")))
        .collect();
    let mut mounts_so_far = vec![0usize; sources.len()];
    for (j, mount) in mounts.into_iter().enumerate() {
        let field = |name: &str| format!("mounts[{j}].{name}");
        let volume = match target[j] {
            Some(i) => {
                mounts_so_far[i] += 1;
                sources[i].as_ref().map(|source| (source, mounts_so_far[i]))
            }
            None => {
                let known: Vec<String> = names.iter().map(|n| quoted(n).to_string()).collect();
                c.push(
                    field("name"),
                    ErrorCode::VolumeUnknownVolume,
                    format!(
                        "no entry of volumes is named {} (volumes: {})",
                        quoted(&mount.name),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                None
            }
        };
        let name = volume
            .and_then(|((volume_name, _, _), n)| mount_name(c, volume_name, n, &mut taken, j));
        let checked = check_mount(
            c,
            mount.mount_path,
            mount.sub_path,
            &field,
            first_with_mount_path[j].map(|first| format!("mounts[{first}]")),
        );
        if let (
            Some(name),
            Some(((_, source, source_read_only), _)),
            Some((mount_path, sub_path)),
        ) = (name, volume, checked)
        {
            out.push(Volume {
                name,
                source: source.clone(),
                mount_path,
                sub_path,
                read_only: mount.read_only || *source_read_only,
            });
        }
    }
    out
}

/// The model name of mount `n` (from 1) of `volume`, recorded in `taken`; `None` after recording
/// a clash with a name already taken.
fn mount_name(
    c: &mut Collector,
    volume: &VolumeName,
    n: usize,
    taken: &mut Vec<(String, String)>,
    j: usize,
) -> Option<VolumeName> {
    if n == 1 {
        return Some(volume.clone());
    }
    let derived = derived_mount_name(volume.as_str(), n);
    if let Some((_, holder)) = taken.iter().find(|(name, _)| *name == derived) {
        c.push(
            format!("mounts[{j}].name"),
            ErrorCode::VolumeDuplicateName,
            format!(
                "mount {n} of volume {} is named {}, which {holder} already has; rename that volume",
                quoted(volume.as_str()),
                quoted(&derived)
            ),
        );
        return None;
    }
    taken.push((derived.clone(), format!("mounts[{j}]")));
    c.take(
        || format!("mounts[{j}].name"),
        VolumeName::from_string(derived),
    )
}

/// The model name of mount number `n` (from 2) of volume `name`: `name-n`, with `name` cut short
/// so the result stays a DNS label of at most 63 characters. `name` is a DNS label, so ASCII,
/// and a cut never leaves a leading `-`.
fn derived_mount_name(name: &str, n: usize) -> String {
    let suffix = format!("-{n}");
    let keep = name.len().min(63 - suffix.len());
    format!("{}{suffix}", &name[..keep])
}

/// Kubernetes `hostPath.type` values, and whether Berth's host volumes honour them.
fn check_host_path_type(kind: Option<&str>) -> Result<(), InvalidValue> {
    match kind {
        None | Some("" | "DirectoryOrCreate") => Ok(()),
        Some(
            kind
            @ ("Directory" | "File" | "FileOrCreate" | "Socket" | "CharDevice" | "BlockDevice"),
        ) => Err(InvalidValue::new(
            ErrorCode::SandboxUnsupportedFeature,
            format!(
                "{} is not supported: Berth's host volumes behave as \"DirectoryOrCreate\" (a missing directory is created with its parent's owner, group and mode); give \"DirectoryOrCreate\", \"\" or no type",
                quoted(kind)
            ),
        )),
        Some(other) => Err(InvalidValue::new(
            ErrorCode::SandboxInvalidParameter,
            format!(
                "{} is not a Kubernetes hostPath type; give \"DirectoryOrCreate\", \"\" or no type",
                quoted(other)
            ),
        )),
    }
}

/// A Kubernetes-form volume's source, with whether it forces its mounts read-only.
fn check_kubernetes_source(
    c: &mut Collector,
    claim: Option<wire::PersistentVolumeClaimSource>,
    host_path: Option<wire::HostPathSource>,
    nfs: Option<wire::NfsBackend>,
    i: usize,
    policy: &StoragePolicy,
) -> Option<(VolumeSource, bool)> {
    let field = |name: &str| format!("volumes[{i}].{name}");
    let set = [
        ("persistentVolumeClaim", claim.is_some()),
        ("hostPath", host_path.is_some()),
        ("nfs", nfs.is_some()),
    ];
    if !exactly_one_backend(c, &set, i) {
        return None;
    }
    if let Some(claim) = claim {
        // A reference, as in Kubernetes: the claim must exist, Berth never creates it.
        let claim_name = c.take(
            || field("persistentVolumeClaim.claimName"),
            ClaimName::from_string(claim.claim_name),
        )?;
        let source = VolumeSource::Pvc(PvcSource {
            claim_name,
            create_if_not_exists: false,
            delete_on_sandbox_termination: false,
            storage_class: None,
            storage: None,
            access_modes: Vec::new(),
        });
        return Some((source, claim.read_only));
    }
    if let Some(host) = host_path {
        let kind_ok = c
            .check(
                || field("hostPath.type"),
                check_host_path_type(host.kind.as_deref()),
            )
            .is_some();
        let source = check_host(c, host.path, &|| field("hostPath.path"), policy);
        return kind_ok.then_some((source?, false));
    }
    let nfs = nfs?;
    let read_only = nfs.read_only;
    Some((
        check_nfs(c, nfs, &|name| field(&format!("nfs.{name}")))?,
        read_only,
    ))
}

/// Records a violation unless exactly one backend of `set` is given.
fn exactly_one_backend(c: &mut Collector, set: &[(&str, bool)], i: usize) -> bool {
    let given: Vec<&str> = set
        .iter()
        .filter(|(_, is_set)| *is_set)
        .map(|(name, _)| *name)
        .collect();
    if given.len() == 1 {
        return true;
    }
    let problem = if given.is_empty() {
        "names no backend".to_owned()
    } else {
        format!("names {} backends ({})", given.len(), given.join(", "))
    };
    let all: Vec<&str> = set.iter().map(|(name, _)| *name).collect();
    c.push(
        format!("volumes[{i}]"),
        ErrorCode::VolumeInvalidBackend,
        format!("{problem}; set exactly one of {}", all.join(", ")),
    );
    false
}

/// A host directory: a normal absolute path under one of the policy's allowed roots.
fn check_host(
    c: &mut Collector,
    path: String,
    field: &dyn Fn() -> String,
    policy: &StoragePolicy,
) -> Option<VolumeSource> {
    let path = c.take(field, HostPath::from_string(path))?;
    if policy.allowed_host_roots.is_empty() {
        c.push(
            field(),
            ErrorCode::VolumeHostPathNotAllowed,
            "host volumes are disabled on this server: storage.allowed_host_paths is empty",
        );
        return None;
    }
    if !policy
        .allowed_host_roots
        .iter()
        .any(|root| path.is_within(root))
    {
        let roots: Vec<&str> = policy
            .allowed_host_roots
            .iter()
            .map(HostPath::as_str)
            .collect();
        c.push(
            field(),
            ErrorCode::VolumeHostPathNotAllowed,
            format!(
                "{} is not under an allowed root (storage.allowed_host_paths: {})",
                quoted(path.as_str()),
                roots.join(", ")
            ),
        );
        return None;
    }
    Some(VolumeSource::Host { path })
}

/// An NFS export; `field` maps `server`, `path`, `options[j]` to their paths in the request.
fn check_nfs(
    c: &mut Collector,
    nfs: wire::NfsBackend,
    field: &dyn Fn(&str) -> String,
) -> Option<VolumeSource> {
    let server = c.take(|| field("server"), NfsServer::from_string(nfs.server));
    let path = c.take(|| field("path"), NfsExportPath::from_string(nfs.path));
    let options = check_options(
        c,
        nfs.options.as_deref(),
        &|j| field(&format!("options[{j}]")),
        MountOption::nfs,
    );
    match (server, path, options) {
        (Some(server), Some(path), Some(options)) => Some(VolumeSource::Nfs(NfsSource {
            server,
            path,
            options,
        })),
        _ => None,
    }
}

/// The backend fields of one wire volume, moved out of it.
struct Backends {
    host: Option<wire::HostBackend>,
    pvc: Option<wire::PvcBackend>,
    ossfs: Option<wire::OssfsBackend>,
    nfs: Option<wire::NfsBackend>,
}

fn check_backend(
    c: &mut Collector,
    backends: Backends,
    i: usize,
    policy: &StoragePolicy,
) -> Option<VolumeSource> {
    let field = |name: &str| format!("volumes[{i}].{name}");
    let set = [
        ("host", backends.host.is_some()),
        ("pvc", backends.pvc.is_some()),
        ("ossfs", backends.ossfs.is_some()),
        ("nfs", backends.nfs.is_some()),
    ];
    if !exactly_one_backend(c, &set, i) {
        return None;
    }
    if let Some(host) = backends.host {
        return check_host(c, host.path, &|| field("host.path"), policy);
    }
    if let Some(pvc) = backends.pvc {
        let claim_name = c.take(
            || field("pvc.claimName"),
            ClaimName::from_string(pvc.claim_name),
        );
        let storage_class = match pvc.storage_class {
            None => Some(None),
            Some(s) => c
                .take(
                    || field("pvc.storageClass"),
                    StorageClassName::from_string(s),
                )
                .map(Some),
        };
        let storage = match &pvc.storage {
            None => Some(None),
            Some(s) => c
                .check(
                    || field("pvc.storage"),
                    ByteQuantity::new(s, "storage", ErrorCode::VolumeInvalidPvcStorage),
                )
                .map(Some),
        };
        let mut access_modes = Vec::new();
        let mut modes_ok = true;
        for (j, mode) in pvc.access_modes.iter().flatten().enumerate() {
            let f = || field(&format!("pvc.accessModes[{j}]"));
            match c.check(f, AccessMode::new(mode)) {
                Some(m) if access_modes.contains(&m) => {
                    c.push(
                        f(),
                        ErrorCode::VolumeInvalidPvcAccessMode,
                        format!("{} is listed twice", m.as_str()),
                    );
                    modes_ok = false;
                }
                Some(m) => access_modes.push(m),
                None => modes_ok = false,
            }
        }
        return match (claim_name, storage_class, storage, modes_ok) {
            (Some(claim_name), Some(storage_class), Some(storage), true) => {
                Some(VolumeSource::Pvc(PvcSource {
                    claim_name,
                    create_if_not_exists: pvc.create_if_not_exists,
                    delete_on_sandbox_termination: pvc.delete_on_sandbox_termination,
                    storage_class,
                    storage,
                    access_modes,
                }))
            }
            _ => None,
        };
    }
    if let Some(oss) = backends.ossfs {
        let bucket = c.take(|| field("ossfs.bucket"), OssBucket::from_string(oss.bucket));
        let endpoint = c.take(
            || field("ossfs.endpoint"),
            OssEndpoint::from_string(oss.endpoint),
        );
        let version = match &oss.version {
            None => Some(OssfsVersion::default()),
            Some(v) => c.check(|| field("ossfs.version"), OssfsVersion::new(v)),
        };
        let options = check_options(
            c,
            oss.options.as_deref(),
            &|j| field(&format!("ossfs.options[{j}]")),
            MountOption::ossfs,
        );
        let credentials = c.check(
            || field("ossfs"),
            OssCredentials::from_strings(oss.access_key_id, oss.access_key_secret),
        );
        return match (bucket, endpoint, version, options, credentials) {
            (Some(bucket), Some(endpoint), Some(version), Some(options), Some(credentials)) => {
                Some(VolumeSource::Ossfs(OssfsSource {
                    bucket,
                    endpoint,
                    version,
                    options,
                    credentials,
                }))
            }
            _ => None,
        };
    }
    let nfs = backends.nfs?;
    check_nfs(c, nfs, &|name| field(&format!("nfs.{name}")))
}

fn check_options(
    c: &mut Collector,
    options: Option<&[String]>,
    field: &dyn Fn(usize) -> String,
    parse: fn(&str) -> Result<MountOption, InvalidValue>,
) -> Option<Vec<MountOption>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (j, option) in options.unwrap_or_default().iter().enumerate() {
        match c.check(|| field(j), parse(option)) {
            Some(o) => out.push(o),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

impl From<&SandboxSpec> for wire::CreateSandboxRequest {
    /// The canonical request for a spec: defaults spelled out, empty subPaths omitted.
    fn from(spec: &SandboxSpec) -> Self {
        let mut limits = BTreeMap::new();
        if let Some(cpu) = &spec.resources.cpu {
            limits.insert("cpu".to_owned(), cpu.as_str().to_owned());
        }
        if let Some(memory) = &spec.resources.memory {
            limits.insert("memory".to_owned(), memory.as_str().to_owned());
        }
        let options = |o: &[MountOption]| {
            (!o.is_empty()).then(|| o.iter().map(ToString::to_string).collect())
        };
        let volumes = spec
            .volumes
            .iter()
            .map(|v| {
                let mut w = wire::Volume {
                    name: v.name.to_string(),
                    host: None,
                    pvc: None,
                    ossfs: None,
                    nfs: None,
                    persistent_volume_claim: None,
                    host_path: None,
                    mount_path: Some(v.mount_path.to_string()),
                    read_only: v.read_only,
                    sub_path: v.sub_path.as_ref().map(ToString::to_string),
                };
                match &v.source {
                    VolumeSource::Host { path } => {
                        w.host = Some(wire::HostBackend {
                            path: path.to_string(),
                        })
                    }
                    VolumeSource::Pvc(p) => {
                        w.pvc = Some(wire::PvcBackend {
                            claim_name: p.claim_name.to_string(),
                            create_if_not_exists: p.create_if_not_exists,
                            delete_on_sandbox_termination: p.delete_on_sandbox_termination,
                            storage_class: p.storage_class.as_ref().map(ToString::to_string),
                            storage: p.storage.as_ref().map(|s| s.as_str().to_owned()),
                            access_modes: (!p.access_modes.is_empty()).then(|| {
                                p.access_modes
                                    .iter()
                                    .map(|m| m.as_str().to_owned())
                                    .collect()
                            }),
                        });
                    }
                    VolumeSource::Ossfs(o) => {
                        w.ossfs = Some(wire::OssfsBackend {
                            bucket: o.bucket.to_string(),
                            endpoint: o.endpoint.to_string(),
                            version: Some(o.version.as_str().to_owned()),
                            options: options(&o.options),
                            access_key_id: o.credentials.access_key_id().to_owned(),
                            access_key_secret: o.credentials.access_key_secret().to_owned(),
                        });
                    }
                    VolumeSource::Nfs(n) => {
                        w.nfs = Some(wire::NfsBackend {
                            server: n.server.to_string(),
                            path: n.path.as_str().to_owned(),
                            options: options(&n.options),
                            read_only: false,
                        });
                    }
                }
                w
            })
            .collect::<Vec<_>>();
        wire::CreateSandboxRequest {
            image: Some(wire::ImageSpec {
                uri: spec.image.uri.clone(),
                auth: spec.image.auth.as_ref().map(|a| wire::ImageAuth {
                    username: Some(a.username.clone()),
                    password: Some(a.password.clone()),
                }),
            }),
            platform: spec.platform,
            timeout: spec.timeout_seconds.and_then(|t| i64::try_from(t).ok()),
            resource_limits: Some(limits),
            env: (!spec.env.is_empty()).then(|| {
                spec.env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            }),
            metadata: (!spec.metadata.is_empty()).then(|| {
                spec.metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            entrypoint: Some(spec.entrypoint.argv().to_vec()),
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..Default::default()
        }
    }
}

impl MetadataPatch {
    /// Validates a merge patch: every key and every non-null value, all at once.
    pub fn from_request(patch: &wire::PatchSandboxMetadataRequest) -> Result<Self, Violations> {
        let mut c = Collector::default();
        if patch.0.len() > MAX_METADATA_ENTRIES * 2 {
            c.push(
                "metadata",
                ErrorCode::SandboxInvalidParameter,
                format!(
                    "a patch may name at most {} keys (got {})",
                    MAX_METADATA_ENTRIES * 2,
                    patch.0.len()
                ),
            );
            return Err(Violations(c.0));
        }
        let mut out = BTreeMap::new();
        for (key, value) in &patch.0 {
            let field = || map_field("metadata", key);
            let k = c.check(field, MetadataKey::new(key));
            let v = match value {
                None => Some(None),
                Some(v) => c.check(field, MetadataValue::new(v)).map(Some),
            };
            if let (Some(k), Some(v)) = (k, v) {
                out.insert(k, v);
            }
        }
        Violations::from_vec(c.0).map_or(Ok(MetadataPatch(out)), Err)
    }

    /// Applies the patch if the result keeps within [`MAX_METADATA_ENTRIES`]; otherwise leaves
    /// `metadata` unchanged (all-or-nothing).
    pub fn apply_checked(&self, metadata: &mut Metadata) -> Result<(), Violations> {
        let mut patched = metadata.clone();
        self.apply_to(&mut patched);
        if patched.len() > MAX_METADATA_ENTRIES {
            return Err(Violations::one(Violation::new(
                "metadata",
                ErrorCode::SandboxInvalidParameter,
                format!(
                    "the patch would leave {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
                    patched.len()
                ),
            )));
        }
        *metadata = patched;
        Ok(())
    }
}

/// Checks a renewal's new expiry: in the future, and within the policy's maximum timeout.
pub fn check_renewal(
    requested: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: &StoragePolicy,
) -> Result<(), Violations> {
    const CODE: ErrorCode = ErrorCode::SandboxInvalidExpiration;
    if requested <= now {
        return Err(Violations::one(Violation::new(
            "expiresAt",
            CODE,
            format!(
                "must be in the future (it is {}, now is {})",
                requested.to_rfc3339(),
                now.to_rfc3339()
            ),
        )));
    }
    if let Some(max) = policy.max_timeout_seconds
        && (requested - now).num_seconds() > i64::try_from(max).unwrap_or(i64::MAX)
    {
        return Err(Violations::one(Violation::new(
            "expiresAt",
            CODE,
            format!("may be at most {max} seconds ahead (server.max_sandbox_timeout_seconds)"),
        )));
    }
    Ok(())
}

/// Checks an endpoint port: 1..=65535.
pub fn check_port(port: i64) -> Result<u16, Violations> {
    u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| {
        Violations::one(Violation::new(
            "port",
            ErrorCode::SandboxInvalidPort,
            format!("must be 1..65535 (got {port})"),
        ))
    })
}

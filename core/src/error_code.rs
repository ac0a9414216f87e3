//! Every machine-readable error code Berth can answer with, as one enum of stable strings.
//!
//! The string of a code never changes once released: clients switch on it. Each variant's doc line
//! says when the code happens; [`ErrorCode::description`] returns that same text so documentation
//! and error catalogues are generated from this one place.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident = ($code:literal, $status:literal), )+) => {
        /// A stable error code with the HTTP status it is answered with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The stable wire string, e.g. `VOLUME::INVALID_SUB_PATH`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            /// The HTTP status this code is answered with.
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)+ }
            }

            /// When this code happens (the variant's documentation).
            pub const fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => concat!($($doc),+).trim_ascii(),)+ }
            }
        }
    };
}

error_codes! {
    // ---- authentication (no namespace, as upstream and the SDKs expect) ----
    /// The `OPEN-SANDBOX-API-KEY` header is absent on a route that needs it.
    MissingApiKey = ("MISSING_API_KEY", 401),
    /// The `OPEN-SANDBOX-API-KEY` header does not match the configured key.
    InvalidApiKey = ("INVALID_API_KEY", 401),

    // ---- transport-level rejections ----
    /// The body is not JSON, or does not fit the schema (wrong type, unknown or missing field).
    GeneralInvalidBody = ("GENERAL::INVALID_BODY", 400),
    /// A query parameter cannot be parsed (wrong type, out of range, malformed encoding).
    GeneralInvalidQuery = ("GENERAL::INVALID_QUERY", 400),
    /// A path parameter cannot be parsed.
    GeneralInvalidPathParameter = ("GENERAL::INVALID_PATH_PARAMETER", 400),
    /// The request body is not `application/json`.
    GeneralUnsupportedMediaType = ("GENERAL::UNSUPPORTED_MEDIA_TYPE", 415),
    /// The request body exceeds the 1 MiB limit.
    GeneralPayloadTooLarge = ("GENERAL::PAYLOAD_TOO_LARGE", 413),
    /// No route matches the request path.
    GeneralNotFound = ("GENERAL::NOT_FOUND", 404),
    /// The route exists but not for this HTTP method.
    GeneralMethodNotAllowed = ("GENERAL::METHOD_NOT_ALLOWED", 405),
    /// An unexpected server-side failure; details are only in the server log.
    GeneralInternalError = ("GENERAL::INTERNAL_ERROR", 500),
    /// The call did not finish within `server.request_deadline_seconds`; a create that finishes
    /// later is rolled back, so nothing is left half-made.
    GeneralDeadlineExceeded = ("GENERAL::DEADLINE_EXCEEDED", 504),

    // ---- sandbox ----
    /// A request field is invalid and no more specific code applies (entrypoint, timeout, resources, env, limits).
    SandboxInvalidParameter = ("SANDBOX::INVALID_PARAMETER", 400),
    /// No sandbox has this id.
    SandboxNotFound = ("SANDBOX::NOT_FOUND", 404),
    /// The sandbox is in a state that does not allow the operation (e.g. pause when not running).
    SandboxInvalidState = ("SANDBOX::INVALID_STATE", 409),
    /// A spec field Berth does not implement carries a non-default value.
    SandboxUnsupportedFeature = ("SANDBOX::UNSUPPORTED_FEATURE", 400),
    /// The image is neither present on the runtime nor pullable.
    SandboxImageNotFound = ("SANDBOX::IMAGE_NOT_FOUND", 400),
    /// The engine refused well-formed `resourceLimits` this host cannot grant (more CPUs than it
    /// has, memory below the engine's minimum); the message carries the engine's reason.
    SandboxUnsatisfiableResourceLimits = ("SANDBOX::UNSATISFIABLE_RESOURCE_LIMITS", 400),
    /// A port the server publishes for every sandbox (`docker.published_ports`) could not be
    /// bound on the engine's host because something else holds it; retrying may succeed.
    SandboxPortAlreadyAllocated = ("SANDBOX::PORT_ALREADY_ALLOCATED", 409),
    /// Another writer kept changing the sandbox (on Kubernetes: the Pod's `resourceVersion`)
    /// and the runtime gave up after a bounded number of re-reads; retrying may succeed.
    SandboxConflict = ("SANDBOX::CONFLICT", 409),
    /// The sandbox did not run within the runtime's start deadline (on Kubernetes
    /// `kubernetes.start_timeout_seconds`: no node fits it, a volume will not mount, ...); the
    /// message names the cause the cluster reported, and nothing of the create is left behind.
    SandboxStartTimeout = ("SANDBOX::START_TIMEOUT", 504),
    /// A renewal's `expiresAt` is not in the future, or an endpoint's `expires` is not in the
    /// future or is more than 30 days ahead.
    SandboxInvalidExpiration = ("SANDBOX::INVALID_EXPIRATION", 400),
    /// A metadata key or value breaks the Kubernetes label rules, or uses the reserved `opensandbox.io/` prefix.
    SandboxInvalidMetadataLabel = ("SANDBOX::INVALID_METADATA_LABEL", 400),
    /// An endpoint port is outside 1..65535.
    SandboxInvalidPort = ("SANDBOX::INVALID_PORT", 400),
    /// The sandbox exposes no endpoint for this port.
    SandboxEndpointNotAvailable = ("SANDBOX::ENDPOINT_NOT_AVAILABLE", 404),
    /// The server proxy found nothing answering at the sandbox's port: the connection was refused
    /// or reset, or what answered is not HTTP/1.1.
    SandboxEndpointUnreachable = ("SANDBOX::ENDPOINT_UNREACHABLE", 502),
    /// The server proxy could not connect to the sandbox's port within
    /// `proxy.connect_timeout_seconds`.
    SandboxEndpointTimeout = ("SANDBOX::ENDPOINT_TIMEOUT", 504),
    /// The sandbox already has `proxy.max_connections_per_sandbox` proxied requests and
    /// WebSockets open; retry when one ends.
    SandboxProxyLimitReached = ("SANDBOX::PROXY_LIMIT_REACHED", 429),
    /// A signed endpoint route's token was valid but its expiry has passed; ask for a new one.
    SandboxRouteTokenExpired = ("SANDBOX::ROUTE_TOKEN_EXPIRED", 401),
    /// A signed endpoint route's token is malformed, was not signed by any of this server's
    /// route signing keys, or was signed for another sandbox or port.
    SandboxRouteTokenInvalid = ("SANDBOX::ROUTE_TOKEN_INVALID", 403),
    /// On Kubernetes, the pod has no IP yet; the SDK retries on this code.
    KubernetesPodIpNotAvailable = ("KUBERNETES::POD_IP_NOT_AVAILABLE", 404),
    /// The snapshot routes are not implemented.
    SnapshotNotImplemented = ("SNAPSHOT::NOT_IMPLEMENTED", 501),
    /// The container engine or cluster cannot be reached.
    RuntimeUnavailable = ("RUNTIME::UNAVAILABLE", 503),

    // ---- the agent injected into every sandbox (`runtime.execd_image`) ----
    /// The image `runtime.execd_image` names is neither present on the engine nor pullable; no
    /// sandbox can be made until the operator loads it or fixes the setting. Nothing of the
    /// create is left behind.
    ExecdImageNotFound = ("EXECD::IMAGE_NOT_FOUND", 503),
    /// The image `runtime.execd_image` names has no regular file `/execd` or `/bootstrap.sh`
    /// (the message says which). Nothing of the create is left behind.
    ExecdFilesMissing = ("EXECD::FILES_MISSING", 500),
    /// Copying the agent into the sandbox's container failed (the message has the engine's
    /// reason); the create was rolled back.
    ExecdUploadFailed = ("EXECD::UPLOAD_FAILED", 500),

    // ---- volumes ----
    /// A volume `name` is not a DNS label of at most 63 characters.
    VolumeInvalidName = ("VOLUME::INVALID_NAME", 400),
    /// Two volumes of one request share a `name`.
    VolumeDuplicateName = ("VOLUME::DUPLICATE_NAME", 400),
    /// A volume names zero backends, or more than one, of `host`, `pvc`, `ossfs`, `nfs` (in the
    /// Kubernetes form: of `persistentVolumeClaim`, `hostPath`, `nfs`).
    VolumeInvalidBackend = ("VOLUME::INVALID_BACKEND", 400),
    /// Kubernetes form: a `mounts` entry names no entry of `volumes`.
    VolumeUnknownVolume = ("VOLUME::UNKNOWN_VOLUME", 400),
    /// Kubernetes form: an entry of `volumes` is named by no `mounts` entry.
    VolumeNotMounted = ("VOLUME::NOT_MOUNTED", 400),
    /// One request mixes Berth's volume form (`host`/`pvc`/`ossfs`, `mountPath` on the volume) with
    /// the Kubernetes form (`persistentVolumeClaim`/`hostPath` volumes and a `mounts` list).
    VolumeMixedForms = ("VOLUME::MIXED_FORMS", 400),
    /// The runtime does not offer this volume backend.
    VolumeUnsupportedBackend = ("VOLUME::UNSUPPORTED_BACKEND", 400),
    /// A `mountPath` is not absolute and normalised, or holds NUL, a control character, `:` or `,`.
    VolumeInvalidMountPath = ("VOLUME::INVALID_MOUNT_PATH", 400),
    /// Two volumes of one request mount at the same path.
    VolumeDuplicateMountPath = ("VOLUME::DUPLICATE_MOUNT_PATH", 400),
    /// A `mountPath` is reserved (`/`, `/proc`, `/sys`, `/dev`, `/etc/hosts`, `/opt/opensandbox`, ...).
    VolumeReservedMountPath = ("VOLUME::RESERVED_MOUNT_PATH", 400),
    /// A `subPath` is absolute, not normalised, holds `..`, NUL, `\` or a control character, or is too long.
    VolumeInvalidSubPath = ("VOLUME::INVALID_SUB_PATH", 400),
    /// A symlink was found below the trusted root, in `host.path` or in `subPath`; it is refused, not followed.
    VolumeSubPathSymlink = ("VOLUME::SUB_PATH_SYMLINK", 400),
    /// The path to mount exists but is neither a directory nor a regular file (FIFO, socket, device).
    VolumeUnsupportedFileType = ("VOLUME::UNSUPPORTED_FILE_TYPE", 400),
    /// A `host.path` is not an absolute, normalised Unix path.
    VolumeInvalidHostPath = ("VOLUME::INVALID_HOST_PATH", 400),
    /// A `host.path` is outside every root of `storage.allowed_host_paths` (or the list is empty).
    VolumeHostPathNotAllowed = ("VOLUME::HOST_PATH_NOT_ALLOWED", 400),
    /// The server cannot stage verified mounts (not root or not on the engine's host) and unstaged paths are not allowed.
    VolumeStagingUnavailable = ("VOLUME::STAGING_UNAVAILABLE", 400),
    /// A `pvc.claimName` is not a DNS-1123 subdomain of 2..253 characters.
    VolumeInvalidPvcName = ("VOLUME::INVALID_PVC_NAME", 400),
    /// A `pvc.storage` is not a positive Kubernetes quantity of bytes.
    VolumeInvalidPvcStorage = ("VOLUME::INVALID_PVC_STORAGE", 400),
    /// A `pvc.storageClass` is not a DNS-1123 subdomain.
    VolumeInvalidPvcStorageClass = ("VOLUME::INVALID_PVC_STORAGE_CLASS", 400),
    /// A `pvc.accessModes` entry is not a Kubernetes access mode, or is repeated.
    VolumeInvalidPvcAccessMode = ("VOLUME::INVALID_PVC_ACCESS_MODE", 400),
    /// The claim does not exist and `createIfNotExists` is false.
    VolumePvcNotFound = ("VOLUME::PVC_NOT_FOUND", 400),
    /// The claim exists but is being deleted (Kubernetes: `Terminating`); a create would hang on it.
    VolumePvcBeingDeleted = ("VOLUME::PVC_BEING_DELETED", 409),
    /// The named volume's driver or options give no plain local directory, so a `subPath` cannot be staged.
    VolumePvcSubPathUnsupportedDriver = ("VOLUME::PVC_SUBPATH_UNSUPPORTED_DRIVER", 400),
    /// An `ossfs.bucket` breaks the OSS bucket naming rules.
    VolumeInvalidOssfsBucket = ("VOLUME::INVALID_OSSFS_BUCKET", 400),
    /// An `ossfs.endpoint` is not a plain host name.
    VolumeInvalidOssfsEndpoint = ("VOLUME::INVALID_OSSFS_ENDPOINT", 400),
    /// An `ossfs.version` is neither `1.0` nor `2.0`.
    VolumeInvalidOssfsVersion = ("VOLUME::INVALID_OSSFS_VERSION", 400),
    /// An `ossfs.options` entry is not on the allowlist or its value has the wrong form.
    VolumeInvalidOssfsOption = ("VOLUME::INVALID_OSSFS_OPTION", 400),
    /// An `ossfs` access key id or secret is empty, too long, or holds whitespace or control characters.
    VolumeInvalidOssfsCredentials = ("VOLUME::INVALID_OSSFS_CREDENTIALS", 400),
    /// The ossfs helper refused or failed to mount the bucket (wrong bucket, endpoint or keys, or an
    /// unreachable endpoint); the message carries what the helper said, credentials removed.
    VolumeOssfsMountFailed = ("VOLUME::OSSFS_MOUNT_FAILED", 400),
    /// An `nfs.server` is not a host name or IP address.
    VolumeInvalidNfsServer = ("VOLUME::INVALID_NFS_SERVER", 400),
    /// An `nfs.path` is not an absolute, normalised export path.
    VolumeInvalidNfsPath = ("VOLUME::INVALID_NFS_PATH", 400),
    /// An `nfs.options` entry is not on the allowlist or its value has the wrong form.
    VolumeInvalidNfsOption = ("VOLUME::INVALID_NFS_OPTION", 400),
    /// The engine could not mount the NFS export (server name does not resolve, server
    /// unreachable, export refused); the message carries the engine's reason.
    VolumeNfsMountFailed = ("VOLUME::NFS_MOUNT_FAILED", 400),
}

impl ErrorCode {
    /// Looks a code up by its wire string.
    pub fn from_wire(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn codes_are_unique_namespaced_and_documented() {
        let mut seen = BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert!(!code.description().is_empty(), "{code} has no description");
            let s = code.as_str();
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c == ':'),
                "{s} is not UPPER_SNAKE"
            );
            assert!((400..=599).contains(&code.http_status()) || code.http_status() == 401);
            assert_eq!(ErrorCode::from_wire(s), Some(*code));
        }
        // The two auth codes keep upstream's un-namespaced spelling; everything else is namespaced.
        for code in ErrorCode::ALL {
            if !matches!(code, ErrorCode::MissingApiKey | ErrorCode::InvalidApiKey) {
                assert!(code.as_str().contains("::"), "{code} lacks a namespace");
            }
        }
    }

    #[test]
    fn no_code_is_answered_with_422() {
        assert!(ErrorCode::ALL.iter().all(|c| c.http_status() != 422));
    }
}

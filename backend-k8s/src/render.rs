//! Rendering a validated create into the Kubernetes objects that run it: the sandbox Pod, the
//! Secrets it needs (registry credentials, ossfs keys) and the claims to create. Pure: the same
//! input gives the same objects, which is what a dry run returns and what the snapshot tests pin.
//!
//! The operator's Pod template is the base: its values hold unless the request sets them, and
//! Berth's volumes and mounts are appended to the template's, never replacing them (a clash of
//! names or mount paths is a 400 naming both). Untrusted code runs without a service account
//! token, without privilege or privilege escalation, and without the capabilities Docker drops
//! too; the template may loosen that deliberately, a request never can. With
//! `kubernetes.subpath_init_image`, an init container of Berth's prepares subPaths first, by the
//! rule Docker keeps (docs/kubernetes.md, "subPath"). With `runtime.execd_image`, another copies
//! the agent into an `emptyDir` and the sandbox starts through its launcher (docs/kubernetes.md,
//! "The execd agent").

use std::collections::{BTreeMap, BTreeSet};

use berth_core::ErrorCode;
use berth_core::model::{MountedVolume, ReadOnlyMode, SandboxId, Volume, VolumeSource};
use berth_core::runtime::CreateSandbox;
use berth_core::validate::{Violation, Violations};
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Capabilities, Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource,
    LocalObjectReference, NFSVolumeSource, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, ResourceRequirements, Secret, SecurityContext,
    Volume as PodVolume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::KubernetesConfig;
use crate::pod_state::{PodState, STATE_ANNOTATION, STATE_VERSION, StoredVolume};

/// Label holding the sandbox id on every Pod (the upstream name, so tools keep working).
pub const LABEL_ID: &str = "opensandbox.io/id";
/// Label marking objects Berth manages.
pub const LABEL_MANAGED_BY: &str = "berth.managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "berth";
/// Label naming the sandbox a Secret or claim was made for (the sweep of objects whose Pod
/// never appeared looks for it).
pub const LABEL_MADE_FOR: &str = "berth.made-for";
/// Label on a claim Berth created with `deleteOnSandboxTermination`: every Pod that mounts it
/// becomes one of its owners, so it goes with the last of them.
pub const LABEL_DELETE_WITH_SANDBOXES: &str = "berth.delete-with-sandboxes";
/// The name of the sandbox container in the Pod.
pub const SANDBOX_CONTAINER: &str = "sandbox";
/// Size of a claim Berth creates when the request names none.
pub const DEFAULT_CLAIM_SIZE: &str = "1Gi";
/// The init container that prepares subPaths (with `kubernetes.subpath_init_image`).
pub const SUBPATH_INIT_CONTAINER: &str = "berth-subpaths";
/// The init container that copies the agent in (with `runtime.execd_image`).
pub const EXECD_INIT_CONTAINER: &str = "berth-execd";
/// The `emptyDir` the agent is copied into and the sandbox runs it from.
pub const EXECD_VOLUME: &str = "berth-execd";
/// Where that volume is mounted, in both containers (a reserved mount path: ARCHITECTURE.md,
/// "Volume rules").
pub const EXECD_DIR: &str = "/opt/opensandbox";
/// The launcher every sandbox starts through when the agent is injected.
pub const EXECD_BOOTSTRAP: &str = "/opt/opensandbox/bootstrap.sh";
/// The agent, as the launcher finds it (`EXECD`).
pub const EXECD_PATH: &str = "/opt/opensandbox/execd";
/// Where the init container mounts each pod volume it prepares, whole: `<dir>/<pod volume>`.
pub const SUBPATH_VOLUMES_DIR: &str = "/berth/volumes";
/// Exit status of [`SUBPATH_SCRIPT`]: a segment is a symbolic link.
pub const SUBPATH_EXIT_SYMLINK: i32 = 10;
/// Exit status of [`SUBPATH_SCRIPT`]: a segment before the last is not a directory.
pub const SUBPATH_EXIT_NOT_DIRECTORY: i32 = 11;
/// Exit status of [`SUBPATH_SCRIPT`]: the last segment is neither a directory nor a regular file.
pub const SUBPATH_EXIT_UNSUPPORTED_TYPE: i32 = 12;
/// Exit status of [`SUBPATH_SCRIPT`]: a segment is missing and the volume is read-only.
pub const SUBPATH_EXIT_MISSING: i32 = 13;
/// Exit status of [`SUBPATH_SCRIPT`]: a directory could not be entered, created or given its
/// owner and mode.
pub const SUBPATH_EXIT_FAILED: i32 = 14;

/// What the init container runs (`sh -c`): the same rule as Docker's (ARCHITECTURE.md, "Volume
/// rules" and "Path safety"; docs/kubernetes.md, "subPath"). Its arguments come in fours: the
/// volume's name (for messages), the directory its pod volume is mounted at, the subPath below
/// it, and `create` or `check` (a volume mounted read-only cannot have directories made). Never
/// interpolated: the subPaths are arguments, and `-f` turns globbing off. Each segment is
/// entered from the directory before it (the working directory pins the inode, as an fd would);
/// a link is refused, also one swapped in between the check and `cd` (the inode entered must be
/// the one checked). A missing directory gets its parent's mode while it still belongs to root,
/// then its parent's owner and group: in this order no `CAP_FOWNER` is needed, and `chown` of a
/// directory keeps its set-group-ID bit.
pub const SUBPATH_SCRIPT: &str = r#"set -euf
fail() {
	status=$1
	shift
	printf 'berth-subpaths: %s\n' "$*" >&2
	exit "$status"
}
[ $(($# % 4)) -eq 0 ] || fail 2 "arguments come in fours: volume, directory, subPath, create|check"
while [ $# -gt 0 ]; do
	volume=$1
	rest=$3
	missing=$4
	cd -P -- "$2" || fail 14 "volume \"$volume\": cannot enter $2"
	shift 4
	shown=
	while [ -n "$rest" ]; do
		case $rest in
		*/*)
			segment=${rest%%/*}
			rest=${rest#*/}
			;;
		*)
			segment=$rest
			rest=
			;;
		esac
		shown=${shown:+$shown/}$segment
		next=./$segment
		made=
		if [ -L "$next" ]; then
			fail 10 "volume \"$volume\": $shown is a symbolic link; links in a subPath are refused, not followed"
		elif [ -d "$next" ]; then
			:
		elif [ -e "$next" ]; then
			[ -z "$rest" ] || fail 11 "volume \"$volume\": $shown is not a directory"
			[ -f "$next" ] || fail 12 "volume \"$volume\": $shown is neither a directory nor a regular file; only those can be mounted"
			break
		elif [ "$missing" != create ]; then
			fail 13 "volume \"$volume\": $shown does not exist, and the volume is read-only, so it is not created"
		else
			mode=$(stat -c %a .)
			owner=$(stat -c %u:%g .)
			if mkdir -- "$next"; then
				made=1
			elif [ -L "$next" ]; then
				fail 10 "volume \"$volume\": $shown is a symbolic link; links in a subPath are refused, not followed"
			elif [ ! -d "$next" ]; then
				fail 14 "volume \"$volume\": cannot create $shown"
			fi
		fi
		checked=$(stat -c %d:%i -- "$next") || fail 14 "volume \"$volume\": cannot inspect $shown"
		cd -P -- "$next" || fail 14 "volume \"$volume\": cannot enter $shown"
		[ "$(stat -c %d:%i .)" = "$checked" ] ||
			fail 10 "volume \"$volume\": $shown was replaced while it was checked (by a symbolic link?); links in a subPath are refused"
		if [ -n "$made" ]; then
			chmod -- "$mode" . || fail 14 "volume \"$volume\": cannot set the mode of $shown"
			chown -- "$owner" . || fail 14 "volume \"$volume\": cannot set the owner of $shown"
		fi
	done
done
"#;

/// The Pod name of a sandbox.
pub fn pod_name(id: &SandboxId) -> String {
    format!("sandbox-{id}")
}

/// The Secret holding a sandbox's registry credentials.
pub fn registry_secret_name(id: &SandboxId) -> String {
    format!("sandbox-{id}-registry")
}

/// The Secret holding one ossfs volume's keys.
pub fn ossfs_secret_name(id: &SandboxId, volume: &Volume) -> String {
    format!("sandbox-{id}-ossfs-{}", volume.name)
}

/// What a create needs rendered, beyond the request itself.
#[derive(Debug, Clone, Default)]
pub struct PodPlan {
    /// Claims that do not exist and will be created for this sandbox.
    pub claims_to_create: BTreeSet<String>,
    /// Until when the create may run (recorded on the Pod for every replica).
    pub create_deadline: Option<DateTime<Utc>>,
    /// Whether the API server has `volumeMounts[].recursiveReadOnly` (from discovery): then a
    /// read-only volume is read-only recursively; otherwise its submounts may stay writable,
    /// and the report says `non-recursive`.
    pub recursive_read_only: bool,
}

/// The objects of one sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObjects {
    /// The sandbox Pod.
    pub pod: Pod,
    /// Secrets to create before the Pod (owned by it once it exists).
    pub secrets: Vec<Secret>,
    /// Claims to create before the Pod.
    pub claims: Vec<PersistentVolumeClaim>,
    /// The state recorded on the Pod.
    pub state: PodState,
}

impl RenderedObjects {
    /// The objects as a dry run shows them: Secret values replaced by `<redacted>`.
    pub fn redacted_json(&self) -> serde_json::Value {
        let secrets: Vec<Secret> = self
            .secrets
            .iter()
            .map(|s| Secret {
                string_data: s.string_data.as_ref().map(|d| {
                    d.keys()
                        .map(|k| (k.clone(), "<redacted>".to_owned()))
                        .collect()
                }),
                data: s.data.as_ref().map(|d| {
                    d.keys()
                        .map(|k| (k.clone(), ByteString(b"<redacted>".to_vec())))
                        .collect()
                }),
                ..s.clone()
            })
            .collect();
        serde_json::json!({
            "pod": self.pod,
            "secrets": secrets,
            "claims": self.claims,
        })
    }
}

fn rejected(field: String, code: ErrorCode, message: String) -> Violation {
    Violation::new(field, code, message)
}

/// Renders the objects of `request` on `config`, following `plan`. Every problem is reported at
/// once, with the field it is about.
pub fn render(
    config: &KubernetesConfig,
    request: &CreateSandbox,
    plan: &PodPlan,
) -> Result<RenderedObjects, Violations> {
    let id = &request.id;
    let spec = &request.spec;
    let mut violations = Vec::new();
    let mut pod = config.pod_template.clone().unwrap_or_default();
    let mut pod_spec = pod.spec.take().unwrap_or_default();

    // The sandbox container: the template's first container, or a fresh one.
    let mut container = if pod_spec.containers.is_empty() {
        Container::default()
    } else {
        pod_spec.containers.remove(0)
    };
    container.name = SANDBOX_CONTAINER.to_owned();
    container.image = Some(spec.image.uri.clone());
    if let Some(policy) = &config.image_pull_policy {
        container.image_pull_policy = Some(policy.clone());
    }
    container.command = Some(spec.entrypoint.argv().to_vec());
    container.args = None;
    merge_env(&mut container, spec);
    merge_resources(&mut container, spec);
    harden(&mut container, config);

    // Volumes: the template's stay; Berth's are appended.
    let template_volumes: BTreeSet<String> = pod_spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    let template_mounts: BTreeMap<String, String> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), m.name.clone()))
        .collect();
    let mut pod_volumes: Vec<PodVolume> = Vec::new();
    let mut mounts: Vec<VolumeMount> = Vec::new();
    let mut secrets = Vec::new();
    let mut reports = Vec::new();
    // Two volumes on one claim share one pod volume: claim name → pod volume name.
    let mut claim_volumes: BTreeMap<String, String> = BTreeMap::new();
    // SubPaths the init container prepares, and the pod volumes it mounts (name → read-only).
    let mut to_prepare: Vec<SubPathToPrepare> = Vec::new();
    let mut prepared_volumes: BTreeMap<String, bool> = BTreeMap::new();
    let read_only_mode = if plan.recursive_read_only {
        ReadOnlyMode::Recursive
    } else {
        ReadOnlyMode::NonRecursive
    };
    for volume in spec.volumes_in_mount_order() {
        let i = spec
            .volumes
            .iter()
            .position(|v| std::ptr::eq(v, volume))
            .unwrap_or_default();
        if template_volumes.contains(volume.name.as_str()) {
            violations.push(rejected(
                format!("volumes[{i}].name"),
                ErrorCode::VolumeDuplicateName,
                format!(
                    "volume \"{}\" is also a volume of the operator's pod template (kubernetes.pod_template_file); choose another name",
                    volume.name
                ),
            ));
        }
        if let Some(theirs) = template_mounts.get(volume.mount_path.as_str()) {
            violations.push(rejected(
                format!("volumes[{i}].mountPath"),
                ErrorCode::VolumeDuplicateMountPath,
                format!(
                    "{} is where the operator's pod template (kubernetes.pod_template_file) mounts its volume \"{theirs}\"",
                    volume.mount_path
                ),
            ));
        }
        let mut sub_path: Vec<&str> = Vec::new();
        let pod_volume_name = match &volume.source {
            VolumeSource::Host { path } => {
                // The allowed root is the hostPath and the rest of the path goes into subPath,
                // so the kubelet's own subPath checks cover all of it.
                let Some(root) = config
                    .allowed_host_paths
                    .iter()
                    .filter(|root| path.is_within(root))
                    .max_by_key(|root| root.as_str().len())
                else {
                    violations.push(rejected(
                        format!("volumes[{i}].host.path"),
                        ErrorCode::VolumeHostPathNotAllowed,
                        format!("{path} is not under an allowed root (storage.allowed_host_paths)"),
                    ));
                    continue;
                };
                sub_path.extend(path.segments_below(root).unwrap_or_default());
                pod_volumes.push(PodVolume {
                    name: volume.name.to_string(),
                    host_path: Some(HostPathVolumeSource {
                        path: root.to_string(),
                        type_: Some("Directory".to_owned()),
                    }),
                    ..PodVolume::default()
                });
                volume.name.to_string()
            }
            VolumeSource::Pvc(pvc) => {
                let claim = pvc.claim_name.to_string();
                if let Some(shared) = claim_volumes.get(&claim) {
                    shared.clone()
                } else {
                    pod_volumes.push(PodVolume {
                        name: volume.name.to_string(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: claim.clone(),
                            read_only: None,
                        }),
                        ..PodVolume::default()
                    });
                    claim_volumes.insert(claim, volume.name.to_string());
                    volume.name.to_string()
                }
            }
            VolumeSource::Nfs(nfs) => {
                if !nfs.options.is_empty() {
                    violations.push(rejected(
                        format!("volumes[{i}].nfs.options"),
                        ErrorCode::SandboxUnsupportedFeature,
                        "a Pod's nfs volume takes no mount options on Kubernetes; mount the export through a PersistentVolume with mountOptions and use a pvc volume".to_owned(),
                    ));
                }
                pod_volumes.push(PodVolume {
                    name: volume.name.to_string(),
                    nfs: Some(NFSVolumeSource {
                        server: nfs.server.to_string(),
                        path: nfs.path.as_str().to_owned(),
                        read_only: volume.read_only.then_some(true),
                    }),
                    ..PodVolume::default()
                });
                volume.name.to_string()
            }
            VolumeSource::Ossfs(oss) => {
                if oss.version != berth_core::model::OssfsVersion::V1 {
                    violations.push(rejected(
                        format!("volumes[{i}].ossfs.version"),
                        ErrorCode::VolumeUnsupportedBackend,
                        "the Kubernetes runtime mounts ossfs 1.0 through its CSI driver; 2.0 is not offered".to_owned(),
                    ));
                }
                let secret = ossfs_secret_name(id, volume);
                secrets.push(Secret {
                    metadata: owned_meta(config, id, &secret),
                    string_data: Some(BTreeMap::from([
                        (
                            "akId".to_owned(),
                            oss.credentials.access_key_id().to_owned(),
                        ),
                        (
                            "akSecret".to_owned(),
                            oss.credentials.access_key_secret().to_owned(),
                        ),
                    ])),
                    type_: Some("Opaque".to_owned()),
                    ..Secret::default()
                });
                // The subPath of an ossfs volume is the bucket prefix, given to the driver.
                let prefix = volume
                    .sub_path
                    .as_ref()
                    .map_or_else(|| "/".to_owned(), |p| format!("/{p}"));
                let options: Vec<String> = oss.options.iter().map(|o| format!("-o {o}")).collect();
                let mut attributes = BTreeMap::from([
                    ("bucket".to_owned(), oss.bucket.to_string()),
                    ("url".to_owned(), oss.endpoint.to_string()),
                    ("path".to_owned(), prefix),
                ]);
                if !options.is_empty() {
                    attributes.insert("otherOpts".to_owned(), options.join(" "));
                }
                pod_volumes.push(PodVolume {
                    name: volume.name.to_string(),
                    csi: Some(CSIVolumeSource {
                        driver: config.ossfs_csi_driver.clone(),
                        node_publish_secret_ref: Some(LocalObjectReference { name: secret }),
                        read_only: volume.read_only.then_some(true),
                        volume_attributes: Some(attributes),
                        fs_type: None,
                    }),
                    ..PodVolume::default()
                });
                volume.name.to_string()
            }
        };
        if !matches!(volume.source, VolumeSource::Ossfs(_))
            && let Some(own) = &volume.sub_path
        {
            sub_path.extend(own.segments());
        }
        if !sub_path.is_empty() && !matches!(volume.source, VolumeSource::Ossfs(_)) {
            // A read-only nfs volume is mounted read-only as a whole: nothing can be made in it.
            let read_only_source =
                matches!(volume.source, VolumeSource::Nfs(_)) && volume.read_only;
            prepared_volumes.insert(pod_volume_name.clone(), read_only_source);
            to_prepare.push(SubPathToPrepare {
                index: i,
                volume: volume.name.to_string(),
                pod_volume: pod_volume_name.clone(),
                sub_path: sub_path.join("/"),
                create: !read_only_source,
            });
        }
        mounts.push(VolumeMount {
            name: pod_volume_name,
            mount_path: volume.mount_path.to_string(),
            sub_path: (!sub_path.is_empty()).then(|| sub_path.join("/")),
            read_only: volume.read_only.then_some(true),
            recursive_read_only: (volume.read_only && plan.recursive_read_only)
                .then(|| "Enabled".to_owned()),
            ..VolumeMount::default()
        });
        reports.push((i, MountedVolume::of(volume, read_only_mode)));
    }
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .extend(mounts);
    if !pod_volumes.is_empty() {
        pod_spec
            .volumes
            .get_or_insert_with(Vec::new)
            .extend(pod_volumes);
    }

    if let Some(image) = &config.execd_image {
        inject_execd(
            config,
            image,
            spec,
            &mut container,
            &mut pod_spec,
            (&template_volumes, &template_mounts),
            &mut violations,
        );
    }

    if let Some(image) = &config.subpath_init_image
        && let Some(first) = to_prepare.iter().map(|p| p.index).min()
    {
        if pod_spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == SUBPATH_INIT_CONTAINER)
        {
            let field = spec.volumes.get(first).map_or("subPath", sub_path_field);
            violations.push(rejected(
                format!("volumes[{first}].{field}"),
                ErrorCode::SandboxUnsupportedFeature,
                format!(
                    "this server cannot prepare subPaths: the operator's pod template (kubernetes.pod_template_file) has an init container named \"{SUBPATH_INIT_CONTAINER}\", the name of Berth's own init container for kubernetes.subpath_init_image; the operator must rename the template's"
                ),
            ));
        } else {
            to_prepare.sort_by_key(|p| p.index);
            pod_spec
                .init_containers
                .get_or_insert_with(Vec::new)
                .insert(
                    0,
                    subpath_init_container(config, image, &to_prepare, &prepared_volumes),
                );
        }
    }

    if let Some(auth) = &spec.image.auth {
        let name = registry_secret_name(id);
        secrets.push(registry_secret(config, id, &name, &spec.image.uri, auth));
        pod_spec
            .image_pull_secrets
            .get_or_insert_with(Vec::new)
            .push(LocalObjectReference { name });
    }
    if let Some(platform) = spec.platform {
        place_on_platform(&mut pod_spec, platform, &mut violations);
    }

    pod_spec.containers.insert(0, container);
    pod_spec.restart_policy = Some("Never".to_owned());
    // No service account token for untrusted code unless the operator's template says so.
    pod_spec
        .automount_service_account_token
        .get_or_insert(false);
    if pod_spec.service_account_name.is_none() {
        pod_spec
            .service_account_name
            .clone_from(&config.service_account_name);
    }
    if pod_spec.runtime_class_name.is_none() {
        pod_spec
            .runtime_class_name
            .clone_from(&config.runtime_class_name);
    }
    pod.spec = Some(pod_spec);

    reports.sort_by_key(|(i, _)| *i);
    let state = PodState {
        v: STATE_VERSION,
        created_at: request.created_at,
        expires_at: request.expires_at(),
        metadata: spec
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        entrypoint: spec.entrypoint.argv().to_vec(),
        volumes: reports
            .iter()
            .map(|(_, r)| StoredVolume::from_report(r))
            .collect(),
        created_claims: plan.claims_to_create.iter().cloned().collect(),
        create_deadline: plan.create_deadline,
    };
    let mut meta = std::mem::take(&mut pod.metadata);
    meta.name = Some(pod_name(id));
    meta.namespace = Some(config.namespace.clone());
    meta.generate_name = None;
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(config.extra_labels.clone());
    labels.insert(LABEL_ID.to_owned(), id.to_string());
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(STATE_ANNOTATION.to_owned(), state.to_annotation());
    pod.metadata = meta;

    let claims = render_claims(config, request, plan);
    Violations::from_vec(violations).map_or(
        Ok(RenderedObjects {
            pod,
            secrets,
            claims,
            state,
        }),
        Err,
    )
}

/// One subPath for the init container: which request volume (for messages and the field of a
/// refusal), on which pod volume, the path below that volume, and whether missing directories
/// may be created.
#[derive(Debug, Clone)]
struct SubPathToPrepare {
    index: usize,
    volume: String,
    pod_volume: String,
    sub_path: String,
    create: bool,
}

/// The field a refusal of a volume's path names, as on Docker: its `subPath` if it has one,
/// else its `host.path` (the part below the allowed root).
pub fn sub_path_field(volume: &Volume) -> &'static str {
    if volume.sub_path.is_some() {
        "subPath"
    } else {
        "host.path"
    }
}

/// How this configuration resolves subPaths, for the capabilities' details.
pub fn sub_path_handling(config: &KubernetesConfig) -> &'static str {
    if config.subpath_init_image.is_some() {
        "checked before the kubelet mounts it by Berth's init container (kubernetes.subpath_init_image): any link refused, missing directories created with their parent's owner, group and mode"
    } else {
        "resolved by the kubelet (links leaving the volume refused, links inside followed; missing directories created owned by root)"
    }
}

/// Berth's init container (see [`SUBPATH_SCRIPT`]): root, to create directories in volumes it
/// does not own and hand them to their parent's owner, but with only the capabilities that
/// needs: `CHOWN`; `DAC_OVERRIDE` to enter and write directories of other owners; `FSETID` so
/// that a set-group-ID parent's mode is copied whole (a new directory inherits the parent's
/// group, which root's groups need not include, and `chmod` would then drop that bit).
/// `FOWNER` is not needed: the mode is set while the directory still belongs to root. Requests
/// equal limits, so a Guaranteed sandbox stays Guaranteed; a failure's message (the script's
/// last line) reaches the Pod status from the log.
fn subpath_init_container(
    config: &KubernetesConfig,
    image: &str,
    to_prepare: &[SubPathToPrepare],
    volumes: &BTreeMap<String, bool>,
) -> Container {
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity("100m".to_owned())),
        ("memory".to_owned(), Quantity("32Mi".to_owned())),
    ]);
    Container {
        name: SUBPATH_INIT_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        // Without a policy of the operator's, a `:latest` image is not pulled for every sandbox.
        image_pull_policy: Some(
            config
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| "IfNotPresent".to_owned()),
        ),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            SUBPATH_SCRIPT.to_owned(),
            SUBPATH_INIT_CONTAINER.to_owned(),
        ]),
        args: Some(
            to_prepare
                .iter()
                .flat_map(|p| {
                    [
                        p.volume.clone(),
                        format!("{SUBPATH_VOLUMES_DIR}/{}", p.pod_volume),
                        p.sub_path.clone(),
                        if p.create { "create" } else { "check" }.to_owned(),
                    ]
                })
                .collect(),
        ),
        volume_mounts: Some(
            volumes
                .iter()
                .map(|(name, read_only)| VolumeMount {
                    name: name.clone(),
                    mount_path: format!("{SUBPATH_VOLUMES_DIR}/{name}"),
                    read_only: read_only.then_some(true),
                    ..VolumeMount::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            limits: Some(resources.clone()),
            requests: Some(resources),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            // A template's runAsNonRoot is for the sandbox's code; this is the operator's image
            // running Berth's script, and it must be root (see docs/kubernetes.md).
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(
                    ["CHOWN", "DAC_OVERRIDE", "FSETID"]
                        .map(str::to_owned)
                        .to_vec(),
                ),
            }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// The agent (`runtime.execd_image`), as upstream injects it: an init container of the image
/// copies `/execd` and `/bootstrap.sh` into an `emptyDir` mounted at [`EXECD_DIR`], and the
/// sandbox container runs `[EXECD_BOOTSTRAP, ...entrypoint]` with `EXECD` set (over any value of
/// the template's or the request's: the launcher must find the injected agent). A name or path
/// that clashes with the template's or the request's is refused, never merged.
fn inject_execd(
    config: &KubernetesConfig,
    image: &str,
    spec: &berth_core::model::SandboxSpec,
    container: &mut Container,
    pod_spec: &mut PodSpec,
    (template_volumes, template_mounts): (&BTreeSet<String>, &BTreeMap<String, String>),
    violations: &mut Vec<Violation>,
) {
    let before = violations.len();
    let template = "the operator's pod template (kubernetes.pod_template_file)";
    if let Some(i) = spec
        .volumes
        .iter()
        .position(|v| v.name.as_str() == EXECD_VOLUME)
    {
        violations.push(rejected(
            format!("volumes[{i}].name"),
            ErrorCode::VolumeDuplicateName,
            format!(
                "\"{EXECD_VOLUME}\" is the name of the volume that holds the execd agent (runtime.execd_image); choose another name"
            ),
        ));
    }
    let clashes = [
        template_volumes
            .contains(EXECD_VOLUME)
            .then(|| format!("{template} has a volume named \"{EXECD_VOLUME}\"")),
        template_mounts
            .get(EXECD_DIR)
            .map(|name| format!("{template} mounts its volume \"{name}\" at {EXECD_DIR}")),
        pod_spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == EXECD_INIT_CONTAINER)
            .then(|| format!("{template} has an init container named \"{EXECD_INIT_CONTAINER}\"")),
    ];
    for clash in clashes.into_iter().flatten() {
        violations.push(rejected(
            "runtime.execd_image".to_owned(),
            ErrorCode::SandboxUnsupportedFeature,
            format!(
                "this server cannot inject the execd agent: {clash}, which Berth uses for it; the operator must rename the template's"
            ),
        ));
    }
    if violations.len() > before {
        return;
    }
    let mut command = vec![EXECD_BOOTSTRAP.to_owned()];
    command.extend(container.command.take().unwrap_or_default());
    container.command = Some(command);
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != "EXECD");
    env.push(EnvVar {
        name: "EXECD".to_owned(),
        value: Some(EXECD_PATH.to_owned()),
        value_from: None,
    });
    let mount = VolumeMount {
        name: EXECD_VOLUME.to_owned(),
        mount_path: EXECD_DIR.to_owned(),
        ..VolumeMount::default()
    };
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(mount.clone());
    pod_spec
        .volumes
        .get_or_insert_with(Vec::new)
        .push(PodVolume {
            name: EXECD_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..PodVolume::default()
        });
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity("100m".to_owned())),
        ("memory".to_owned(), Quantity("64Mi".to_owned())),
    ]);
    let init = Container {
        name: EXECD_INIT_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        // Without a policy of the operator's, a `:latest` image is not pulled for every sandbox.
        image_pull_policy: Some(
            config
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| "IfNotPresent".to_owned()),
        ),
        // Only `cp`: no shell needed in the image. The modes are kept, so both stay executable.
        command: Some(
            ["cp", "/execd", "/bootstrap.sh", EXECD_DIR]
                .map(str::to_owned)
                .to_vec(),
        ),
        volume_mounts: Some(vec![mount]),
        // Requests equal limits, so a Guaranteed sandbox stays Guaranteed.
        resources: Some(ResourceRequirements {
            limits: Some(resources.clone()),
            requests: Some(resources),
            ..ResourceRequirements::default()
        }),
        // The image's user, whatever it is, can read its own files and write the emptyDir
        // (mode 0777); nothing more is needed.
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    pod_spec
        .init_containers
        .get_or_insert_with(Vec::new)
        .insert(0, init);
}

/// Metadata of an object made for sandbox `id` (a Secret or a claim).
fn owned_meta(config: &KubernetesConfig, id: &SandboxId, name: &str) -> ObjectMeta {
    let mut labels = config.extra_labels.clone();
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels.insert(LABEL_MADE_FOR.to_owned(), id.to_string());
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(config.namespace.clone()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

/// The request's env over the template's (the request wins by name).
fn merge_env(container: &mut Container, spec: &berth_core::model::SandboxSpec) {
    if spec.env.is_empty() {
        return;
    }
    let env = container.env.get_or_insert_with(Vec::new);
    for (name, value) in &spec.env {
        env.retain(|e| e.name != name.as_str());
        env.push(EnvVar {
            name: name.to_string(),
            value: Some(value.clone()),
            value_from: None,
        });
    }
}

/// Limits from the request, and requests equal to them (the template's stay where the request
/// sets nothing).
fn merge_resources(container: &mut Container, spec: &berth_core::model::SandboxSpec) {
    let mut asked = BTreeMap::new();
    if let Some(cpu) = &spec.resources.cpu {
        asked.insert("cpu".to_owned(), Quantity(cpu.as_str().to_owned()));
    }
    if let Some(memory) = &spec.resources.memory {
        asked.insert("memory".to_owned(), Quantity(memory.as_str().to_owned()));
    }
    if asked.is_empty() {
        return;
    }
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    resources
        .limits
        .get_or_insert_with(BTreeMap::new)
        .extend(asked.clone());
    resources
        .requests
        .get_or_insert_with(BTreeMap::new)
        .extend(asked);
}

/// No privilege, no escalation, the dropped capabilities: defaults the template may loosen.
fn harden(container: &mut Container, config: &KubernetesConfig) {
    let context = container
        .security_context
        .get_or_insert_with(SecurityContext::default);
    context.privileged.get_or_insert(false);
    context.allow_privilege_escalation.get_or_insert(false);
    let capabilities = context
        .capabilities
        .get_or_insert_with(Capabilities::default);
    let drop = capabilities.drop.get_or_insert_with(Vec::new);
    for cap in &config.drop_capabilities {
        if !drop.contains(cap) {
            drop.push(cap.clone());
        }
    }
}

/// A `kubernetes.io/dockerconfigjson` Secret for the image's registry.
fn registry_secret(
    config: &KubernetesConfig,
    id: &SandboxId,
    name: &str,
    image: &str,
    auth: &berth_core::model::RegistryAuth,
) -> Secret {
    let registry = registry_of(image);
    let config_json = serde_json::json!({
        "auths": {registry: {"username": auth.username, "password": auth.password}}
    });
    Secret {
        metadata: owned_meta(config, id, name),
        string_data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            config_json.to_string(),
        )])),
        type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
        ..Secret::default()
    }
}

/// The registry host of an image reference (Docker's rule: the first component is a registry
/// if it has a `.` or `:` or is `localhost`).
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Node selectors for the requested platform; a template that selects another is a conflict.
fn place_on_platform(
    pod_spec: &mut PodSpec,
    platform: berth_core::model::PlatformSpec,
    violations: &mut Vec<Violation>,
) {
    let (os, arch) = (platform.os.as_str(), platform.arch.as_str());
    let selector = pod_spec.node_selector.get_or_insert_with(BTreeMap::new);
    for (key, value) in [("kubernetes.io/os", os), ("kubernetes.io/arch", arch)] {
        match selector.get(key) {
            Some(theirs) if theirs != value => violations.push(rejected(
                "platform".to_owned(),
                ErrorCode::SandboxUnsupportedFeature,
                format!(
                    "the operator's pod template (kubernetes.pod_template_file) selects {key}={theirs}, not {value}"
                ),
            )),
            _ => {
                selector.insert(key.to_owned(), value.to_owned());
            }
        }
    }
}

/// The claims this create makes: one per claim in `plan.claims_to_create`, with the request's
/// size, class and access modes (from the first volume naming it).
fn render_claims(
    config: &KubernetesConfig,
    request: &CreateSandbox,
    plan: &PodPlan,
) -> Vec<PersistentVolumeClaim> {
    let mut claims = Vec::new();
    for name in &plan.claims_to_create {
        let Some(pvc) = request.spec.volumes.iter().find_map(|v| match &v.source {
            VolumeSource::Pvc(pvc) if pvc.claim_name.as_str() == name => Some(pvc),
            _ => None,
        }) else {
            continue;
        };
        let access_modes = if pvc.access_modes.is_empty() {
            vec!["ReadWriteOnce".to_owned()]
        } else {
            pvc.access_modes
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect()
        };
        let size = pvc
            .storage
            .as_ref()
            .map_or(DEFAULT_CLAIM_SIZE, |s| s.as_str());
        let mut metadata = owned_meta(config, &request.id, name);
        if pvc.delete_on_sandbox_termination
            && let Some(labels) = metadata.labels.as_mut()
        {
            labels.insert(LABEL_DELETE_WITH_SANDBOXES.to_owned(), "true".to_owned());
        }
        claims.push(PersistentVolumeClaim {
            metadata,
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(access_modes),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(size.to_owned()),
                    )])),
                    limits: None,
                }),
                storage_class_name: pvc.storage_class.as_ref().map(ToString::to_string),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        });
    }
    claims
}

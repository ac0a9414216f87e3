//! subPaths on a real kubelet (`cargo xtask k8s-env up`; the kubeconfig is
//! `XTASK_K8S_KUBECONFIG`), with and without Berth's init container
//! (`kubernetes.subpath_init_image`; docs/kubernetes.md, "subPath"): with it, created
//! directories take their parent's owner, group and mode and any link in a subPath is refused,
//! as on Docker; without it, what the kubelet alone does is shown, not assumed. Each test works in
//! a namespace of its own with a PersistentVolume reserved for its claim, all removed on drop
//! (also when the test panics); the tests fail, never skip, when the cluster cannot be reached.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod cluster;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::runtime::Runtime;
use berth_k8s::render::{SUBPATH_INIT_CONTAINER, pod_name};
use berth_k8s::runtime::KubernetesRuntime;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};
use serde_json::json;

use cluster::{IMAGE, TestNamespace, VolumePool, host_file, shell, until_gone};

/// The claim every test mounts, bound to the volume reserved for it.
const CLAIM: &str = "sessions";

/// A runtime on a namespace of the test's own, and the host directory of the one volume its
/// claim binds. Fields drop in order: the runtime, the namespace (its Pods go), then the volume,
/// whose directory is removed only once nothing is mounted below it.
struct Setup {
    runtime: KubernetesRuntime,
    namespace: TestNamespace,
    pool: VolumePool,
    root: PathBuf,
}

/// `init_image`: whether the runtime has `kubernetes.subpath_init_image` (the test image);
/// `sandbox_uid`: the uid and gid sandboxes run as (through the operator's Pod template), or
/// root. The volume's directory exists, owned by root with mode 0755, until the test changes it.
async fn setup(test: &str, init_image: bool, sandbox_uid: Option<u32>) -> Setup {
    let (namespace, runtime) = TestNamespace::with(test, |c| {
        if init_image {
            c.subpath_init_image = Some(IMAGE.into());
        }
        if let Some(uid) = sandbox_uid {
            c.pod_template = Some(
                serde_json::from_value(json!({"spec": {
                    "securityContext": {"runAsUser": uid, "runAsGroup": uid},
                }}))
                .unwrap(),
            );
        }
    })
    .await;
    let pool = VolumePool::reserved(&namespace, &[CLAIM]).await;
    let root = pool.dir.join("0");
    let setup = Setup {
        runtime,
        namespace,
        pool,
        root,
    };
    std::fs::create_dir(&setup.pool.dir).unwrap();
    std::fs::create_dir(&setup.root).unwrap();
    // Made here, not by a create: a create that fails removes a claim it made, and the volume
    // would then stay bound to the removed one.
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": CLAIM, "labels": {"berth.test": "1"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "",
            "volumeName": setup.pool.names[0],
        },
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(setup.namespace.client.clone(), &setup.namespace.name)
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    setup
}

impl Setup {
    /// Deletes a sandbox and waits until its Pod is gone.
    async fn delete(&self, id: &str) {
        let id = berth_core::model::SandboxId::new(id).unwrap();
        self.runtime.delete(&id).await.unwrap();
        until_gone(&self.runtime, &id).await;
    }

    /// Waits (bounded) until the Pod of `id` is gone from the API server.
    async fn until_no_pod(&self, id: &str) {
        let name = pod_name(&berth_core::model::SandboxId::new(id).unwrap());
        for _ in 0..300 {
            if self
                .namespace
                .pods()
                .get_opt(&name)
                .await
                .unwrap()
                .is_none()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("Pod {name} still exists 60 s after its create failed");
    }
}

/// The volume `work` on the claim at `sub_path`, and optionally the claim's root at `/out`.
fn volumes(sub_path: &str, with_out: bool) -> serde_json::Value {
    let mut volumes = vec![
        json!({"name": "work", "pvc": {"claimName": CLAIM, "createIfNotExists": false},
        "mountPath": "/workspace", "subPath": sub_path}),
    ];
    if with_out {
        volumes.push(
            json!({"name": "out", "pvc": {"claimName": CLAIM, "createIfNotExists": false},
            "mountPath": "/out"}),
        );
    }
    serde_json::Value::Array(volumes)
}

/// Hands the volume's root to uid/gid 1000 with mode 0750, as a per-user share would be.
fn owned_by_1000(root: &Path) {
    std::os::unix::fs::chown(root, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o750)).unwrap();
}

/// `shared/link -> target`: a relative link inside the volume, to a directory inside it, as a
/// sandbox sharing the volume could plant (planted from the host here, so the test does not
/// depend on a planting sandbox). Returns the target directory.
fn plant_link(root: &Path) -> PathBuf {
    let shared = root.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::create_dir(shared.join("target")).unwrap();
    std::os::unix::fs::symlink("target", shared.join("link")).unwrap();
    shared.join("target")
}

/// (uid, gid, mode) of each directory below `root`.
fn owners(root: &Path, dirs: &[&str]) -> Vec<(u32, u32, u32)> {
    dirs.iter()
        .map(|d| {
            let meta = std::fs::symlink_metadata(root.join(d)).unwrap();
            assert!(meta.is_dir(), "{d} is not a directory");
            (meta.uid(), meta.gid(), meta.mode() & 0o7777)
        })
        .collect()
}

/// With the init image, a sandbox running as uid 1000 gets a new subPath made with its
/// parent's owner, group and mode, and writes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_init_image_created_directories_take_their_parents_owner_and_mode() {
    let s = setup("sp-owner", true, Some(1000)).await;
    owned_by_1000(&s.root);
    let detail = &s.runtime.capabilities().details["subPath"];
    assert!(detail.contains("init container"), "{detail}");

    s.runtime
        .create(shell(
            "owner-1",
            "id -u > /workspace/written",
            volumes("uid-1/session-7", false),
        ))
        .await
        .unwrap();
    let written = s.root.join("uid-1/session-7/written");
    assert_eq!(host_file(&written).await.trim(), "1000");
    assert_eq!(
        owners(&s.root, &["uid-1", "uid-1/session-7"]),
        [(1000, 1000, 0o750), (1000, 1000, 0o750)]
    );
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), 1000);
    // It was Berth's init container, and it succeeded.
    let pod = s.namespace.pods().get("sandbox-owner-1").await.unwrap();
    let statuses = pod.status.unwrap().init_container_statuses.unwrap();
    let init = statuses
        .iter()
        .find(|c| c.name == SUBPATH_INIT_CONTAINER)
        .unwrap();
    let exit_code = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(exit_code, Some(0), "{init:?}");
    s.delete("owner-1").await;
}

/// Without the init image the kubelet makes the missing directories itself, as root: a
/// sandbox running as uid 1000 cannot write in its own subPath. It reports on the claim's
/// root (owned by 1000), mounted whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_init_image_the_kubelet_makes_them_root_owned_and_the_write_fails() {
    let s = setup("sp-kubelet", false, Some(1000)).await;
    owned_by_1000(&s.root);
    let detail = &s.runtime.capabilities().details["subPath"];
    assert!(detail.contains("kubelet"), "{detail}");

    s.runtime
        .create(shell(
            "kubelet-1",
            "if echo x > /workspace/written 2>/dev/null; then echo wrote; else echo denied; fi > /out/result",
            volumes("uid-1/session-7", true),
        ))
        .await
        .unwrap();
    assert_eq!(host_file(&s.root.join("result")).await.trim(), "denied");
    assert!(!s.root.join("uid-1/session-7/written").exists());
    let made = owners(&s.root, &["uid-1", "uid-1/session-7"]);
    let shown: Vec<String> = made
        .iter()
        .map(|(uid, gid, mode)| format!("{uid}:{gid} {mode:o}"))
        .collect();
    println!("made by the kubelet alone: {shown:?}");
    assert!(
        made.iter().all(|(uid, gid, _)| (*uid, *gid) == (0, 0)),
        "{made:?}"
    );
    s.delete("kubelet-1").await;
}

/// With the init image, a link inside the shared volume to a directory inside it is refused as
/// a subPath (as the last segment or on the way), as Docker refuses it; nothing is made through
/// it and the Pod goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_init_image_a_link_inside_the_volume_is_refused() {
    let s = setup("sp-link", true, None).await;
    let target = plant_link(&s.root);
    for (id, sub_path) in [
        ("via-link", "shared/link"),
        ("below-link", "shared/link/deeper"),
    ] {
        let attempt = s
            .runtime
            .create(shell(
                id,
                "echo through-link > /workspace/written",
                volumes(sub_path, false),
            ))
            .await;
        let error = match attempt {
            Err(e) => e,
            Ok(record) => panic!("{sub_path}: a link was followed: {:?}", record.status),
        };
        println!("{sub_path}: {} {error}", error.code());
        assert_eq!(error.code().as_str(), "VOLUME::SUB_PATH_SYMLINK", "{error}");
        let message = error.to_string();
        assert!(
            message.contains("volumes[0].subPath") && message.contains("volume \"work\""),
            "{message}"
        );
        s.until_no_pod(id).await;
    }
    assert!(!target.join("written").exists());
    assert!(!target.join("deeper").exists());
}

/// Without the init image the kubelet follows a link that stays inside the volume (it refuses
/// only one leading out): the documented difference from Docker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_init_image_the_kubelet_follows_a_link_inside_the_volume() {
    let s = setup("sp-follow", false, None).await;
    let target = plant_link(&s.root);
    s.runtime
        .create(shell(
            "follower",
            "echo through-link > /workspace/written",
            volumes("shared/link", false),
        ))
        .await
        .unwrap();
    assert_eq!(
        host_file(&target.join("written")).await.trim(),
        "through-link"
    );
    s.delete("follower").await;
}

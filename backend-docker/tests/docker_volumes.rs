//! Volumes on the real engine: each backend mounts where asked and writes land where expected;
//! read-only is recursive; a subPath shows only its directory and is created with its parent's
//! owner and mode; a session's files outlive its sandbox; a failed create leaves nothing; a
//! restart (as after kill -9) loses nothing and rolls back an interrupted create.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use berth_core::ErrorCode;
use berth_core::model::{MetadataKey, MetadataPatch, MetadataValue, ReadOnlyMode, SandboxState};
use berth_core::runtime::Runtime;
use common::{TestEnv, exec, request_with};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_backend_mounts_where_asked_and_writes_land() {
    let env = TestEnv::new("land").await;
    let project = env.host_root.join("project");
    fs::create_dir(&project).unwrap();
    let claim = env.claim("data");
    let sandbox = env
        .create(request_with(json!([
            {"name": "project", "host": {"path": project.to_str().unwrap()}, "mountPath": "/work/project"},
            {"name": "data", "pvc": {"claimName": claim, "deleteOnSandboxTermination": true}, "mountPath": "/data"},
            {"name": "session", "pvc": {"claimName": claim}, "mountPath": "/workspace", "subPath": "uid-1/s1"},
        ])))
        .await
        .unwrap();
    assert_eq!(sandbox.status.state, SandboxState::Running);
    let (code, out) = exec(
        &sandbox.id,
        "echo host > /work/project/a && echo whole > /data/b && echo sub > /workspace/c",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read_to_string(project.join("a")).unwrap(), "host\n");
    let mountpoint = env.volume_mountpoint(&claim);
    assert_eq!(fs::read_to_string(mountpoint.join("b")).unwrap(), "whole\n");
    assert_eq!(
        fs::read_to_string(mountpoint.join("uid-1/s1/c")).unwrap(),
        "sub\n"
    );
    // The whole-volume mount shows the subPath's file too; the subPath mount shows only its directory.
    assert_eq!(exec(&sandbox.id, "cat /data/uid-1/s1/c").1, "sub\n");
    assert_eq!(exec(&sandbox.id, "ls -A /workspace").1, "c\n");
    env.runtime().delete(&sandbox.id).await.unwrap();
    assert!(
        !env.volume_mountpoint_exists(&claim),
        "deleteOnSandboxTermination: the volume Berth created is gone"
    );
    assert_eq!(
        fs::read_to_string(project.join("a")).unwrap(),
        "host\n",
        "host data survives the sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_is_recursive_inside_the_sandbox() {
    let env = TestEnv::new("ro").await;
    let shared = env.host_root.join("skills");
    let inner_source = env.dir.join("inner-source");
    fs::create_dir(&shared).unwrap();
    fs::create_dir(shared.join("inner")).unwrap();
    fs::create_dir(&inner_source).unwrap();
    fs::write(inner_source.join("marker"), "from the inner mount\n").unwrap();
    rustix::mount::mount_bind(&inner_source, shared.join("inner")).unwrap();
    let sandbox = env
        .create(request_with(json!([
            {"name": "skills", "host": {"path": shared.to_str().unwrap()}, "mountPath": "/skills", "readOnly": true},
        ])))
        .await
        .unwrap();
    assert_eq!(sandbox.volumes[0].read_only_mode, ReadOnlyMode::Recursive);
    // First prove the inner mount is visible in the sandbox...
    assert_eq!(
        exec(&sandbox.id, "cat /skills/inner/marker"),
        (0, "from the inner mount\n".into())
    );
    // ...then that neither level takes a write.
    let (code, out) = exec(&sandbox.id, "touch /skills/top");
    assert_ne!(code, 0, "write to a read-only mount succeeded");
    assert!(out.contains("Read-only file system"), "{out}");
    let (code, out) = exec(&sandbox.id, "touch /skills/inner/deeper");
    assert_ne!(
        code, 0,
        "write below a read-only mount succeeded: read-only is not recursive"
    );
    assert!(out.contains("Read-only file system"), "{out}");
    env.runtime().delete(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_path_shows_only_its_directory_and_takes_the_parents_owner_and_mode() {
    let env = TestEnv::new("iso").await;
    let volume = env.host_root.join("users");
    fs::create_dir(&volume).unwrap();
    std::os::unix::fs::chown(&volume, Some(1000), Some(1000)).unwrap();
    fs::set_permissions(&volume, fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir(volume.join("uid-2")).unwrap();
    fs::write(volume.join("uid-2/secret"), "not yours").unwrap();
    let sandbox = env
        .create(request_with(json!([
            {"name": "home", "host": {"path": volume.to_str().unwrap()}, "mountPath": "/home/user", "subPath": "uid-1/session-1"},
        ])))
        .await
        .unwrap();
    for created in ["uid-1", "uid-1/session-1"] {
        let meta = fs::metadata(volume.join(created)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1000, 1000, 0o2775),
            "{created}"
        );
    }
    assert_eq!(exec(&sandbox.id, "ls -A /home/user").1, "");
    assert_eq!(
        exec(
            &sandbox.id,
            "grep -rs 'not yours' /home /tmp /root /etc /bin | head -1"
        )
        .1,
        "",
        "another user's file is visible"
    );
    // uid 1000 can write where the volume was prepared for uid 1000.
    assert_eq!(
        exec(
            &sandbox.id,
            "su user -s /bin/sh -c 'touch /home/user/mine' && echo ok"
        )
        .1,
        "ok\n"
    );
    env.runtime().delete(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_finds_its_files_again_and_no_other_session_does() {
    let env = TestEnv::new("persist").await;
    let claim = env.claim("sessions");
    let volume = |sub: &str| json!([{"name": "work", "pvc": {"claimName": claim}, "mountPath": "/workspace", "subPath": sub}]);
    let a = env
        .create(request_with(volume("uid-1-session-1")))
        .await
        .unwrap();
    assert_eq!(
        exec(&a.id, "echo 'step 1 done' > /workspace/progress.txt").0,
        0
    );
    env.runtime().delete(&a.id).await.unwrap();

    let b = env
        .create(request_with(volume("uid-1-session-1")))
        .await
        .unwrap();
    assert_eq!(
        exec(&b.id, "cat /workspace/progress.txt"),
        (0, "step 1 done\n".into())
    );
    let c = env
        .create(request_with(volume("uid-1-session-2")))
        .await
        .unwrap();
    assert_eq!(
        exec(&c.id, "ls -A /workspace").1,
        "",
        "another session sees the first session's files"
    );
    env.runtime().delete(&b.id).await.unwrap();
    env.runtime().delete(&c.id).await.unwrap();
    assert!(
        env.volume_mountpoint_exists(&claim),
        "a volume without deleteOnSandboxTermination is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_fails_at_start_leaves_nothing_behind() {
    let env = TestEnv::new("fail").await;
    let claim = env.claim("made-for-it");
    let mut request = request_with(json!([
        {"name": "work", "pvc": {"claimName": claim}, "mountPath": "/workspace", "subPath": "s"},
        {"name": "host", "host": {"path": env.host_root.to_str().unwrap()}, "mountPath": "/host"},
    ]));
    request["entrypoint"] = json!(["/no/such/program"]);
    let err = env.create(request).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SandboxInvalidParameter, "{err}");
    assert!(err.to_string().contains("/no/such/program"), "{err}");
    let (containers, volumes) = common::leftovers(&env.run);
    assert!(containers.is_empty(), "containers left: {containers:?}");
    assert!(
        volumes.is_empty(),
        "the volume created for the failed sandbox was left: {volumes:?}"
    );
    assert!(
        common::mounts_below(&env.dir).is_empty(),
        "staging mounts left"
    );
    assert!(
        fs::read_dir(env.dir.join("state/mounts"))
            .unwrap()
            .next()
            .is_none(),
        "staging directories left"
    );
    assert!(
        env.runtime().list().await.unwrap().is_empty(),
        "a store record was left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_path_of_a_volume_that_is_not_a_local_directory_is_refused() {
    let env = TestEnv::new("driver").await;
    let claim = env.claim("tmpfs");
    let status = std::process::Command::new("docker")
        .args([
            "volume",
            "create",
            "--driver",
            "local",
            "--opt",
            "type=tmpfs",
            "--opt",
            "device=tmpfs",
        ])
        .args([
            "--label",
            "berth.test=1",
            "--label",
            &format!("berth.test-run={}", env.run),
            &claim,
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let err = env
        .create(request_with(
            json!([{"name": "w", "pvc": {"claimName": claim}, "mountPath": "/w", "subPath": "x"}]),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::VolumePvcSubPathUnsupportedDriver,
        "{err}"
    );
    assert!(common::leftovers(&env.run).0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing_and_rolls_back_an_interrupted_create() {
    let mut env = TestEnv::new("restart").await;
    let claim = env.claim("kept");
    let sandbox = env
        .create(request_with(
            json!([{"name": "w", "pvc": {"claimName": claim}, "mountPath": "/w", "subPath": "s"}]),
        ))
        .await
        .unwrap();
    let renewed =
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 7200, 0).unwrap();
    env.runtime().renew(&sandbox.id, renewed).await.unwrap();
    let patch = MetadataPatch(
        [(
            MetadataKey::new("team").unwrap(),
            Some(MetadataValue::new("ml").unwrap()),
        )]
        .into_iter()
        .collect(),
    );
    env.runtime()
        .patch_metadata(&sandbox.id, &patch)
        .await
        .unwrap();

    // An interrupted create, as a crash would leave it: a record still `Creating`, the volume
    // it had just made, and a staging mount.
    let orphan_volume = env.claim("orphan");
    env.restart(|config| {
        let store = berth_docker::store::Store::open(&config.state_dir.join("state.redb")).unwrap();
        let nonce = "crash-nonce".to_owned();
        let labels = ["--label", "berth.test=1", "--label"];
        let out = std::process::Command::new("docker")
            .args(["volume", "create"])
            .args(labels)
            .arg(format!(
                "berth.test-run={}",
                config.extra_labels["berth.test-run"]
            ))
            .args(["--label", &format!("berth.nonce={nonce}"), &orphan_volume])
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut record = store.get(sandbox.id.as_str()).unwrap().unwrap();
        record.id = "crashed-create".into();
        record.phase = berth_docker::store::Phase::Creating;
        record.created_volumes = vec![berth_docker::store::CreatedVolume {
            name: orphan_volume.clone(),
            nonce,
            delete_on_termination: false,
        }];
        record.volumes.clear();
        // Store writes are async (a writer thread commits); this closure is not: wait on a
        // runtime of its own, on a thread of its own.
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
                    .block_on(store.put(&record))
            })
            .join()
            .unwrap()
        })
        .unwrap();
    })
    .await;

    let after = env.runtime().get(&sandbox.id).await.unwrap();
    assert_eq!(after.status.state, SandboxState::Running);
    assert_eq!(after.expires_at, Some(renewed), "the renewal was lost");
    assert_eq!(
        after
            .metadata
            .get(&MetadataKey::new("team").unwrap())
            .map(|v| v.as_str()),
        Some("ml"),
        "the patch was lost"
    );
    assert_eq!(after.volumes, sandbox.volumes);
    let ids: Vec<String> = env
        .runtime()
        .list()
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(
        ids,
        vec![sandbox.id.to_string()],
        "the interrupted create was not rolled back"
    );
    assert!(
        !env.volume_mountpoint_exists(&orphan_volume),
        "the volume the interrupted create made was left"
    );
    // The sandbox still works after the restart.
    assert_eq!(exec(&sandbox.id, "echo ok > /w/f && cat /w/f").1, "ok\n");
    env.runtime().delete(&sandbox.id).await.unwrap();
}

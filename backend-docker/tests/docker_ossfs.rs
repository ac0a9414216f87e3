//! ossfs volumes on the real engine, with a stand-in helper: a shell script installed as both
//! `ossfs` and `ossfs2` that records each call (its arguments, the mode and content of the
//! credentials file it was given) and bind-mounts a local directory `buckets/<bucket>/<prefix>`
//! onto the mountpoint, so the whole orchestration — keying, sharing, credentials files,
//! staging, reference counting, unmounting, rebuilding after a restart — runs for real.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::ErrorCode;
use berth_core::model::{ReadOnlyMode, VolumeBackendKind};
use berth_core::runtime::Runtime;
use berth_docker::config::DockerConfig;
use common::{TestEnv, exec, request_with};
use serde_json::json;

const SECRET: &str = "s3cr3t-KEY-never-stored";
const OTHER_SECRET: &str = "another-s3cr3t";

/// The stand-in helper. Files next to it switch its behaviour: `ossfs-fail` (print the
/// credentials to stderr and exit 1), `ossfs-noop` (exit 0 without mounting), `ossfs-hang`.
const STAND_IN: &str = r#"#!/bin/sh
dir="$(dirname "$0")"
args="$*"
if [ "$1" = mount ]; then
  mp="$2"; cred="$4"
  bucket=$(sed -n 's/^--oss_bucket=//p' "$cred")
  prefix=$(sed -n 's/^--oss_bucket_prefix=//p' "$cred")
else
  target="$1"; mp="$2"; shift 2; cred=
  while [ $# -ge 2 ]; do
    case "$2" in passwd_file=*) cred="${2#passwd_file=}";; esac
    shift 2
  done
  bucket="${target%%:*}"
  case "$target" in *:/*) prefix="${target#*:/}";; *) prefix=;; esac
fi
echo "$(basename "$0") $args | mode=$(stat -c %a "$cred") | $(tr '\n' ';' < "$cred")" >> "$dir/calls.log"
if [ -e "$dir/ossfs-fail" ]; then echo "ossfs: access denied; config was:" >&2; cat "$cred" >&2; exit 1; fi
if [ -e "$dir/ossfs-noop" ]; then exit 0; fi
if [ -e "$dir/ossfs-hang" ]; then exec sleep 60; fi
src="$dir/buckets/$bucket/$prefix"
mkdir -p "$src"
exec mount --bind "$src" "$mp"
"#;

/// Installs the stand-in as `ossfs` and `ossfs2` beside the state directory (`versions` says
/// which) and points the configuration at them.
fn with_stand_in(config: &mut DockerConfig, versions: &[&str]) {
    let dir = config.state_dir.parent().unwrap().join("helpers");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(dir.join("buckets")).unwrap();
    for name in versions {
        let path = dir.join(name);
        fs::write(&path, STAND_IN).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    config.ossfs.command_v1 = dir.join("ossfs");
    config.ossfs.command_v2 = dir.join("ossfs2");
    config.ossfs.mount_timeout = Duration::from_secs(2);
}

fn helpers(env: &TestEnv) -> PathBuf {
    env.dir.join("helpers")
}

fn calls(env: &TestEnv) -> Vec<String> {
    fs::read_to_string(helpers(env).join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn ossfs_volume(name: &str, secret: &str, version: &str, prefix: &str) -> serde_json::Value {
    json!({"name": name, "mountPath": format!("/{name}"), "subPath": prefix,
        "ossfs": {"bucket": "team-data", "endpoint": "oss-cn-hangzhou.aliyuncs.com",
            "accessKeyId": "AKID", "accessKeySecret": secret, "version": version}})
}

fn mount_root(env: &TestEnv) -> PathBuf {
    env.config.ossfs.mount_root.clone()
}

fn credentials_dir(env: &TestEnv) -> PathBuf {
    env.config.state_dir.join("ossfs-credentials")
}

/// Mounts under the ossfs root, per the kernel.
fn live_mounts(env: &TestEnv) -> Vec<String> {
    common::mounts_below(&mount_root(env))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_share_a_mount_only_with_the_same_key_and_the_last_user_unmounts_it() {
    let mut env = TestEnv::with("ossfs-share", |c| with_stand_in(c, &["ossfs", "ossfs2"])).await;
    let caps = env.runtime().capabilities();
    assert!(caps.offers(VolumeBackendKind::Ossfs));
    assert_eq!(
        caps.details.get("engine_sees_mounts").map(String::as_str),
        Some("true"),
        "the startup probe found the engine's process and saw the probe mount through it"
    );

    // Dry run: the staged mount, no credential, nothing mounted.
    let rendered = env
        .runtime()
        .render(&env.create_request(request_with(json!([ossfs_volume(
            "a", SECRET, "2.0", "runs/1"
        )]))))
        .await
        .unwrap();
    let text = serde_json::to_string(&rendered.runtime_object).unwrap();
    assert!(!text.contains(SECRET) && !text.contains("AKID"), "{text}");
    let planned = &rendered.runtime_object["ossfsMounts"][0];
    assert_eq!(
        (&planned["bucket"], &planned["prefix"], &planned["version"]),
        (&json!("team-data"), &json!("runs/1"), &json!("2.0")),
        "{planned}"
    );
    assert!(calls(&env).is_empty() && entries(&mount_root(&env)).is_empty());

    let a = env
        .create(request_with(json!([ossfs_volume(
            "a", SECRET, "2.0", "runs/1"
        )])))
        .await
        .unwrap();
    let b = env
        .create(request_with(json!([ossfs_volume(
            "b", SECRET, "2.0", "runs/1"
        )])))
        .await
        .unwrap();
    assert_eq!(
        calls(&env).len(),
        1,
        "same key: one mount shared: {:?}",
        calls(&env)
    );
    let first = &calls(&env)[0];
    assert!(first.starts_with("ossfs2 mount "), "{first}");
    assert!(first.contains("mode=600"), "credentials file mode: {first}");
    assert!(
        first.contains(&format!("--oss_access_key_secret={SECRET};"))
            && first.contains("--oss_bucket_prefix=runs/1/;")
            && first.contains("--oss_endpoint=https://oss-cn-hangzhou.aliyuncs.com;"),
        "{first}"
    );
    assert!(
        !first.contains(&format!("{SECRET} ")),
        "no credential on the command line"
    );

    // Another secret for the same bucket and prefix must not reuse the first tenant's mount.
    let c = env
        .create(request_with(json!([ossfs_volume(
            "c",
            OTHER_SECRET,
            "2.0",
            "runs/1"
        )])))
        .await
        .unwrap();
    let mut d_volume = ossfs_volume("d", SECRET, "1.0", "runs/1");
    d_volume["readOnly"] = json!(true);
    d_volume["ossfs"]["options"] = json!(["umask=022", "noxattr"]);
    let d = env.create(request_with(json!([d_volume]))).await.unwrap();
    let log = calls(&env);
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[2].starts_with("ossfs team-data:/runs/1 ")
            && log[2].contains(" -o url=https://oss-cn-hangzhou.aliyuncs.com -o passwd_file=")
            && log[2].ends_with(&format!(
                "-o allow_other -o umask=022 -o noxattr | mode=600 | team-data:AKID:{SECRET};"
            )),
        "{}",
        log[2]
    );
    assert_eq!(entries(&mount_root(&env)).len(), 3);
    assert_eq!(live_mounts(&env).len(), 3);
    assert!(
        entries(&credentials_dir(&env)).is_empty(),
        "credentials files are removed right after mounting"
    );
    assert_eq!(
        fs::metadata(credentials_dir(&env))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700,
        "the credentials directory is private"
    );

    // Data lands in the bucket; the sharer sees it; the read-only sandbox cannot write.
    assert_eq!(exec(&a.id, "echo from-a > /a/f").0, 0);
    let backing = helpers(&env).join("buckets/team-data/runs/1/f");
    assert_eq!(fs::read_to_string(&backing).unwrap(), "from-a\n");
    assert_eq!(exec(&b.id, "cat /b/f").1, "from-a\n");
    assert_eq!(exec(&d.id, "cat /d/f").1, "from-a\n");
    let (code, out) = exec(&d.id, "echo x > /d/g");
    assert_ne!(code, 0, "read-only ossfs volume was writable: {out}");
    assert_eq!(d.volumes[0].read_only_mode, ReadOnlyMode::Recursive);
    assert_eq!(d.volumes[0].source, "team-data");
    assert_eq!(d.volumes[0].sub_path.as_deref(), Some("runs/1"));

    // No credential in what is reported or stored.
    let reported = format!("{:?}", env.runtime().list().await.unwrap());
    assert!(!reported.contains(SECRET) && !reported.contains(OTHER_SECRET));
    let store_bytes = fs::read(env.config.state_dir.join("state.redb")).unwrap();
    for secret in [SECRET, OTHER_SECRET] {
        assert!(
            !store_bytes
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "a credential reached the store"
        );
    }

    // The last user unmounts: a's mount stays for b, goes with b.
    env.runtime().delete(&a.id).await.unwrap();
    assert_eq!(live_mounts(&env).len(), 3);
    env.runtime().delete(&b.id).await.unwrap();
    assert_eq!(live_mounts(&env).len(), 2);
    assert_eq!(
        entries(&mount_root(&env)).len(),
        2,
        "the mountpoint is removed too"
    );

    // A restart (as after kill -9) rebuilds the count from the store: c and d keep their
    // mounts; a mount no record owns (a crash between mounting and recording) is detached.
    let stale = mount_root(&env).join("0123456789abcdef0123456789abcdef");
    let (buckets, left_credentials) = (
        helpers(&env).join("buckets"),
        credentials_dir(&env).join("left-by-a-crash"),
    );
    env.restart(|_| {
        fs::create_dir(&stale).unwrap();
        rustix::mount::mount_bind(&buckets, &stale).unwrap();
        fs::write(&left_credentials, "x").unwrap();
    })
    .await;
    assert!(
        !stale.exists(),
        "the unowned mount was detached and removed"
    );
    assert!(entries(&credentials_dir(&env)).is_empty());
    assert_eq!(live_mounts(&env).len(), 2);
    assert_eq!(
        exec(&c.id, "ls /c").1,
        "f\n",
        "c's mount survived the restart"
    );
    env.runtime().delete(&c.id).await.unwrap();
    env.runtime().delete(&d.id).await.unwrap();
    assert!(live_mounts(&env).is_empty());
    assert!(entries(&mount_root(&env)).is_empty());
    assert_eq!(calls(&env).len(), 3, "no mount was made twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_that_fails_anywhere_leaves_nothing_behind() {
    let env = TestEnv::with("ossfs-fail", |c| with_stand_in(c, &["ossfs2"])).await;
    let nothing_left = |what: &str| {
        let (containers, volumes) = common::leftovers(&env.run);
        assert!(
            containers.is_empty() && volumes.is_empty(),
            "{what}: {containers:?} {volumes:?}"
        );
        assert!(
            common::mounts_below(&env.dir).is_empty(),
            "{what}: mounts left"
        );
        assert!(
            entries(&mount_root(&env)).is_empty(),
            "{what}: mountpoints left"
        );
        assert!(
            entries(&credentials_dir(&env)).is_empty(),
            "{what}: credentials left"
        );
        assert!(
            entries(&env.config.state_dir.join("mounts")).is_empty(),
            "{what}: staging directories left"
        );
    };
    let request = || request_with(json!([ossfs_volume("o", SECRET, "2.0", "p")]));

    // The helper refuses (what a wrong key or bucket does): its words, without the secret.
    fs::write(helpers(&env).join("ossfs-fail"), "").unwrap();
    let err = env.create(request()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::VolumeOssfsMountFailed, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("access denied") && message.contains("<redacted>"),
        "{message}"
    );
    assert!(
        !message.contains(SECRET),
        "the secret leaked into the error: {message}"
    );
    assert!(
        env.runtime().list().await.unwrap().is_empty(),
        "a record was left"
    );
    nothing_left("helper failed");
    fs::remove_file(helpers(&env).join("ossfs-fail")).unwrap();

    // The helper says success but nothing is mounted.
    fs::write(helpers(&env).join("ossfs-noop"), "").unwrap();
    let err = env.create(request()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::VolumeOssfsMountFailed, "{err}");
    assert!(err.to_string().contains("nothing is mounted"), "{err}");
    nothing_left("helper mounted nothing");
    fs::remove_file(helpers(&env).join("ossfs-noop")).unwrap();

    // The helper hangs: killed at the timeout.
    fs::write(helpers(&env).join("ossfs-hang"), "").unwrap();
    let err = env.create(request()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::VolumeOssfsMountFailed, "{err}");
    assert!(
        err.to_string().contains("did not finish within 2 s"),
        "{err}"
    );
    nothing_left("helper hung");
    fs::remove_file(helpers(&env).join("ossfs-hang")).unwrap();

    // The mount works but a later step fails (a symlinked host path): the mount goes too.
    std::os::unix::fs::symlink("/", env.host_root.join("link")).unwrap();
    let err = env
        .create(request_with(json!([
            ossfs_volume("o", SECRET, "2.0", "p"),
            {"name": "h", "host": {"path": env.host_root.join("link").to_str().unwrap()}, "mountPath": "/h"},
        ])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::VolumeSubPathSymlink, "{err}");
    assert_eq!(
        calls(&env).len(),
        4,
        "the mount was made before the host path failed"
    );
    nothing_left("host path failed after mounting");

    // The start fails: the mount goes with the container.
    let mut bad_start = request();
    bad_start["entrypoint"] = json!(["/no/such/program"]);
    let err = env.create(bad_start).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SandboxInvalidParameter, "{err}");
    nothing_left("start failed after mounting");

    // Only ossfs2 is installed: a 1.0 volume is refused by name, before anything happens.
    let before = calls(&env).len();
    let err = env
        .create(request_with(json!([ossfs_volume("o", SECRET, "1.0", "p")])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::VolumeUnsupportedBackend, "{err}");
    assert!(
        err.to_string().contains("volumes[0].ossfs.version"),
        "{err}"
    );
    assert_eq!(calls(&env).len(), before);
    nothing_left("version not installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_helper_ossfs_is_not_offered() {
    let env = TestEnv::with("ossfs-none", |c| {
        c.ossfs.command_v1 = PathBuf::from("/nonexistent/ossfs");
        c.ossfs.command_v2 = PathBuf::from("ossfs2-not-installed-anywhere");
    })
    .await;
    assert!(
        !env.runtime()
            .capabilities()
            .offers(VolumeBackendKind::Ossfs)
    );
    let err = env
        .create(request_with(json!([ossfs_volume("o", SECRET, "2.0", "p")])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::VolumeUnsupportedBackend, "{err}");
    assert!(
        !env.config.ossfs.mount_root.exists(),
        "nothing is made on the host for a backend that is not offered"
    );
}

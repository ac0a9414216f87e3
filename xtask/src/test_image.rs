//! `cargo xtask test-image`: builds `berth-test/busybox:latest`, the image every Docker test
//! runs (no registry is reachable, so nothing can be pulled). It is a rootfs holding Debian's
//! static busybox and its applet links, imported with `docker import`. Idempotent: an existing
//! image is kept; `busybox-static` is installed with apt only when missing.
//!
//! Beside it, `berth-test/execd:latest`, the image `runtime.execd_image` names in tests: the
//! stand-in agent (`testkit/agent`, built static in a target directory of its own, so its flags
//! never invalidate the workspace's build) as `/execd`, its `/bootstrap.sh`, and busybox's `sh`
//! and `cp` (what a Kubernetes init container copies the two with). Rebuilt only when one of
//! those files changed: the image carries a digest of them in a label.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::run;

/// The image the tests use.
pub(crate) const IMAGE: &str = "berth-test/busybox:latest";
const BUSYBOX: &str = "/bin/busybox";

/// The stand-in agent's image.
pub(crate) const EXECD_IMAGE: &str = "berth-test/execd:latest";
/// The label holding the digest of what [`EXECD_IMAGE`] was built from.
const EXECD_DIGEST_LABEL: &str = "berth.test.execd-digest";

/// Both test images.
pub(crate) fn ensure() -> Result<(), String> {
    ensure_busybox_image()?;
    ensure_execd_image()
}

fn ensure_busybox_image() -> Result<(), String> {
    let present = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running docker: {e} (is the Docker CLI installed?)"))?;
    if present.success() {
        eprintln!("xtask: {IMAGE} is present");
        return Ok(());
    }
    ensure_static_busybox()?;
    let rootfs = tempdir("busybox")?;
    let result = build_rootfs(&rootfs).and_then(|()| {
        import(
            &rootfs,
            IMAGE,
            &[
                "CMD [\"/bin/sh\"]".to_owned(),
                "LABEL berth.test=1".to_owned(),
            ],
        )
    });
    let _ = std::fs::remove_dir_all(&rootfs);
    result
}

fn ensure_execd_image() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let agent = build_agent(&root)?;
    ensure_static_busybox()?;
    let bootstrap = root.join("testkit/agent/bootstrap.sh");
    let io = |what: &Path, e: std::io::Error| format!("reading {}: {e}", what.display());
    let mut digest = Fnv::default();
    for file in [&agent, &bootstrap, Path::new(BUSYBOX)] {
        digest.add(&std::fs::read(file).map_err(|e| io(file, e))?);
    }
    let digest = format!("{:016x}", digest.0);
    let built_from = Command::new("docker")
        .args(["image", "inspect", "--format"])
        .arg(format!(
            "{{{{index .Config.Labels \"{EXECD_DIGEST_LABEL}\"}}}} {{{{.Id}}}}"
        ))
        .arg(EXECD_IMAGE)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("running docker: {e} (is the Docker CLI installed?)"))?;
    let built_from = String::from_utf8_lossy(&built_from.stdout)
        .trim()
        .to_owned();
    let (old_digest, old_id) = built_from.split_once(' ').unwrap_or_default();
    if old_digest == digest {
        eprintln!("xtask: {EXECD_IMAGE} is present and up to date");
        return Ok(());
    }
    let rootfs = tempdir("execd")?;
    let result = build_execd_rootfs(&rootfs, &agent, &bootstrap).and_then(|()| {
        import(
            &rootfs,
            EXECD_IMAGE,
            &[
                "ENTRYPOINT [\"/execd\"]".to_owned(),
                "LABEL berth.test=1".to_owned(),
                format!("LABEL {EXECD_DIGEST_LABEL}={digest}"),
            ],
        )
    });
    let _ = std::fs::remove_dir_all(&rootfs);
    result?;
    // The image the tag moved away from, unless something still uses it.
    if !old_id.is_empty() {
        let _ = Command::new("docker")
            .args(["image", "rm", old_id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(())
}

/// Builds the agent static for this machine's target, in `target/test-agent`; its path.
fn build_agent(root: &Path) -> Result<PathBuf, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("running {rustc} -vV: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .ok_or_else(|| format!("{rustc} -vV names no host target"))?
        .trim()
        .to_owned();
    let target_dir = root.join("target/test-agent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // The encoded form outranks RUSTFLAGS and any flags cargo hands this process: the agent is
    // linked static whatever the caller's environment says.
    run(Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "berth-test-agent",
            "--target",
            &host,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static"))?;
    Ok(target_dir.join(host).join("release/berth-test-agent"))
}

fn build_execd_rootfs(rootfs: &Path, agent: &Path, bootstrap: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::create_dir(rootfs.join("bin")).map_err(|e| io("bin", e))?;
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).map_err(|e| io("copying busybox", e))?;
    for applet in ["sh", "cp"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
            .map_err(|e| io(applet, e))?;
    }
    for (from, to) in [(agent, "execd"), (bootstrap, "bootstrap.sh")] {
        let to = rootfs.join(to);
        std::fs::copy(from, &to).map_err(|e| io(&format!("copying {}", from.display()), e))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&to.display().to_string(), e))?;
    }
    Ok(())
}

/// FNV-1a over the files an image is built from: enough to notice that one changed.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn ensure_static_busybox() -> Result<(), String> {
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "busybox-static"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false);
    if installed && Path::new(BUSYBOX).exists() {
        return Ok(());
    }
    eprintln!("xtask: installing busybox-static");
    let install = |update: bool| -> Result<(), String> {
        if update {
            run(Command::new("apt-get").args(["update", "-q"]))?;
        }
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "busybox-static",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    install(false).or_else(|_| install(true))
}

fn tempdir(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("berth-test-image-{name}-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn build_rootfs(rootfs: &Path) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "home"] {
        std::fs::create_dir(rootfs.join(dir)).map_err(|e| io(dir, e))?;
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).map_err(|e| io("copying busybox", e))?;
    let applets = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| io("listing busybox applets", e))?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let link = rootfs.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(|e| io(applet, e))?;
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .map_err(|e| io("etc/passwd", e))?;
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
    )
    .map_err(|e| io("etc/group", e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| io("tmp", e))?;
    Ok(())
}

fn import(rootfs: &Path, image: &str, changes: &[String]) -> Result<(), String> {
    eprintln!("xtask: importing {image}");
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running tar: {e}"))?;
    let tar_out = tar.stdout.take().ok_or("tar has no stdout")?;
    let mut import = Command::new("docker");
    import.arg("import");
    for change in changes {
        import.args(["--change", change]);
    }
    let status = import
        .args(["-", image])
        .stdin(tar_out)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running docker import: {e}"))?;
    let tar_status = tar.wait().map_err(|e| format!("waiting for tar: {e}"))?;
    if status.success() && tar_status.success() {
        Ok(())
    } else {
        Err(format!(
            "building {image} failed (tar: {tar_status}, docker import: {status})"
        ))
    }
}

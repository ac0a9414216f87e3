//! `cargo xtask test-image`: builds `berth-test/busybox:latest`, the image every Docker test
//! runs (no registry is reachable, so nothing can be pulled). It is a rootfs holding Debian's
//! static busybox and its applet links, imported with `docker import`. Idempotent: an existing
//! image is kept; `busybox-static` is installed with apt only when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::run;

/// The image the tests use.
pub(crate) const IMAGE: &str = "berth-test/busybox:latest";
const BUSYBOX: &str = "/bin/busybox";

pub(crate) fn ensure() -> Result<(), String> {
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
    let rootfs = tempdir()?;
    let result = build_rootfs(&rootfs).and_then(|()| import(&rootfs));
    let _ = std::fs::remove_dir_all(&rootfs);
    result
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

fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("berth-test-image-{}", std::process::id()));
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

fn import(rootfs: &Path) -> Result<(), String> {
    eprintln!("xtask: importing {IMAGE}");
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running tar: {e}"))?;
    let tar_out = tar.stdout.take().ok_or("tar has no stdout")?;
    let status = Command::new("docker")
        .args([
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            "--change",
            "LABEL berth.test=1",
            "-",
            IMAGE,
        ])
        .stdin(tar_out)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running docker import: {e}"))?;
    let tar_status = tar.wait().map_err(|e| format!("waiting for tar: {e}"))?;
    if status.success() && tar_status.success() {
        Ok(())
    } else {
        Err(format!(
            "building {IMAGE} failed (tar: {tar_status}, docker import: {status})"
        ))
    }
}

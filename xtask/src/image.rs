//! `cargo xtask image [--dev]`: the server's container image, built without pulling a base
//! image (no registry may be reachable, and a base would bring far more than the server needs).
//!
//! The image holds the `berth-server` binary at `/usr/local/bin/berth-server`, exactly the shared
//! libraries it links as `ldd` resolves them (the dynamic loader included: no musl target can be
//! assumed), `/etc/passwd` and `/etc/group` naming root and the unprivileged user 65532 the
//! Kubernetes manifests run it as, `/tmp`, and `/var/lib/berth`. It is imported into the local
//! engine with `docker import`, its entrypoint the server.
//!
//! Default: the release build of the commit checked out (as `cargo xtask release` makes it),
//! tagged `berth-server:<version>` and `berth-server:latest`. `--dev`: the test build in the
//! target directory, tagged `berth-server:dev` — what the suite's image tests run (a release
//! build takes minutes more, and packing is the same code).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The tag `--dev` gives, and the image tests use.
pub(crate) const DEV_TAG: &str = "berth-server:dev";

const BINARY_IN_IMAGE: &str = "usr/local/bin/berth-server";

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    match args {
        [] => {
            let (bin, version, commit) = crate::release::build_commit()?;
            let tag = format!("berth-server:{version}");
            import(&bin.join("berth-server"), &tag, &version, &commit)?;
            crate::run(Command::new("docker").args(["tag", &tag, "berth-server:latest"]))?;
            eprintln!("xtask: image {tag} (and berth-server:latest) is in the local engine");
            Ok(())
        }
        [flag] if flag == "--dev" => dev(),
        _ => Err(format!(
            "image {}: usage: cargo xtask image [--dev]",
            args.join(" ")
        )),
    }
}

/// `berth-server:dev` from the test build (`cargo build` must have made it).
pub(crate) fn dev() -> Result<(), String> {
    let binary = crate::target_dir(&crate::workspace_root())?.join("debug/berth-server");
    if !binary.exists() {
        return Err(format!(
            "{} is missing: build it first (cargo build --workspace --all-features)",
            binary.display()
        ));
    }
    import(&binary, DEV_TAG, "dev", "unknown")?;
    eprintln!("xtask: image {DEV_TAG} is in the local engine");
    Ok(())
}

/// Packs `binary` and what it links into a root filesystem and imports it as `tag`.
fn import(binary: &Path, tag: &str, version: &str, commit: &str) -> Result<(), String> {
    let rootfs = rootfs(binary)?;
    let mut import = Command::new("docker");
    import.arg("import");
    for change in [
        format!("ENTRYPOINT [\"/{BINARY_IN_IMAGE}\"]"),
        "EXPOSE 8080".to_owned(),
        "WORKDIR /var/lib/berth".to_owned(),
        format!(
            "LABEL org.opencontainers.image.title=berth-server org.opencontainers.image.version={version} org.opencontainers.image.revision={commit} org.opencontainers.image.licenses=Apache-2.0"
        ),
    ] {
        import.args(["--change", &change]);
    }
    let mut child = import
        .args(["-", tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("running docker import: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("docker import has no stdin")?;
    let written = std::io::Write::write_all(&mut stdin, &rootfs);
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| format!("waiting for docker import: {e}"))?;
    written.map_err(|e| format!("writing the root filesystem to docker import: {e}"))?;
    if !status.success() {
        return Err(format!("docker import of {tag} failed ({status})"));
    }
    Ok(())
}

/// The image's root filesystem as a tar: the binary, its libraries, and the few files and
/// directories the server uses.
fn rootfs(binary: &Path) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut files: Vec<(String, Vec<u8>, u32)> =
        vec![(BINARY_IN_IMAGE.to_owned(), crate::read(binary)?, 0o755)];
    for library in linked_libraries(binary)? {
        let path = library
            .to_str()
            .and_then(|p| p.strip_prefix('/'))
            .ok_or_else(|| format!("{}: not an absolute UTF-8 path", library.display()))?
            .to_owned();
        // Read through links: the image holds the file itself at the path the binary asks for.
        files.push((path, crate::read(&library)?, 0o755));
    }
    files.push((
        "etc/passwd".into(),
        b"root:x:0:0:root:/root:/sbin/nologin\nberth:x:65532:65532:berth:/var/lib/berth:/sbin/nologin\n".to_vec(),
        0o644,
    ));
    files.push((
        "etc/group".into(),
        b"root:x:0:\nberth:x:65532:\n".to_vec(),
        0o644,
    ));
    // Every parent of a file, and the two empty directories the server uses, with their parents.
    let mut directories = std::collections::BTreeMap::from([
        ("tmp/".to_owned(), 0o1777),
        ("var/lib/berth/".to_owned(), 0o755),
    ]);
    let leaves: Vec<&str> = files
        .iter()
        .map(|(path, _, _)| path.as_str())
        .chain(["var/lib/berth"])
        .collect();
    for leaf in leaves {
        let mut parent = Path::new(leaf).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            directories
                .entry(format!("{}/", dir.display()))
                .or_insert(0o755);
            parent = dir.parent();
        }
    }
    for (path, mode) in &directories {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(*mode);
        header.set_size(0);
        tar.append_data(&mut header, path, std::io::empty())
            .map_err(|e| format!("packing {path}: {e}"))?;
    }
    for (path, contents, mode) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(*mode);
        header.set_size(contents.len() as u64);
        tar.append_data(&mut header, path, contents.as_slice())
            .map_err(|e| format!("packing {path}: {e}"))?;
    }
    tar.into_inner().map_err(|e| format!("packing: {e}"))
}

/// The shared libraries `binary` links, as `ldd` resolves them, the dynamic loader included.
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_ldd(&String::from_utf8_lossy(&out.stdout))
}

/// The paths in `ldd`'s output: `name => /path (0x…)`, or `/path (0x…)` for the loader; the
/// vDSO (no file) is skipped, and a library not found is an error.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            return Err(format!("a library the server links is missing: {line}"));
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or(path).trim();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    if libraries.is_empty() {
        return Err("ldd names no library: is the binary static? (then nothing is needed, but this image expects glibc)".into());
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibssl.so.3 => not found\n").is_err());
    }

    /// The binary packed is this test's own, which links glibc like the server.
    #[test]
    fn the_rootfs_holds_the_binary_its_libraries_and_the_loader() {
        let exe = std::env::current_exe().unwrap();
        let tar = rootfs(&exe).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for wanted in [BINARY_IN_IMAGE, "etc/passwd", "tmp/", "var/lib/berth/"] {
            assert!(
                paths.iter().any(|p| p == wanted),
                "{wanted} missing: {paths:?}"
            );
        }
        assert!(paths.iter().any(|p| p.contains("libc.so")), "{paths:?}");
        assert!(paths.iter().any(|p| p.contains("ld-linux")), "{paths:?}");
    }
}

//! Table-driven tests of every validation rule: one table per error code, each row a request and
//! the exact violations (field path and code) it must produce. A further table lists requests
//! that sit right next to a rule and must be accepted.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use berth_core::ErrorCode::{self, *};
use berth_core::model::HostPath;
use berth_core::validate::StoragePolicy;
use common::{policy, request, validate, volume, with_volumes};
use serde_json::{Value, json};

struct Row {
    what: String,
    request: Value,
    policy: StoragePolicy,
    expect: Vec<(String, ErrorCode)>,
}

fn row(what: impl Into<String>, request: Value, expect: &[(&str, ErrorCode)]) -> Row {
    Row {
        what: what.into(),
        request,
        policy: policy(),
        expect: expect.iter().map(|(f, c)| ((*f).to_owned(), *c)).collect(),
    }
}

/// A row whose only volume is `volume(patch)` and which must fail at `volumes[0].<field>`.
fn vol_row(what: &str, patch: Value, field: &str, code: ErrorCode) -> Row {
    let field = if field.is_empty() {
        "volumes[0]".to_owned()
    } else {
        format!("volumes[0].{field}")
    };
    row(what, with_volumes(vec![volume(patch)]), &[(&field, code)])
}

fn host(path: &str) -> Value {
    json!({"pvc": null, "host": {"path": path}})
}

fn ossfs(patch: Value) -> Value {
    let mut o = json!({"bucket": "my-bucket", "endpoint": "oss-cn-hangzhou.aliyuncs.com",
                       "accessKeyId": "AKID", "accessKeySecret": "s3cr3t"});
    common::merge(&mut o, patch);
    json!({"pvc": null, "ossfs": o})
}

fn nfs(patch: Value) -> Value {
    let mut n = json!({"server": "nfs.example.com", "path": "/exports/data"});
    common::merge(&mut n, patch);
    json!({"pvc": null, "nfs": n})
}

fn pvc(patch: Value) -> Value {
    let mut p = json!({"claimName": "sessions"});
    common::merge(&mut p, patch);
    json!({ "pvc": p })
}

/// Every table, keyed by the code it is about.
fn tables() -> Vec<(ErrorCode, Vec<Row>)> {
    let mut tables = berth_form_tables();
    for (code, row) in kubernetes_rows() {
        match tables.iter_mut().find(|(c, _)| *c == code) {
            Some((_, rows)) => rows.push(row),
            None => panic!("no table for {code}"),
        }
    }
    tables.extend(kubernetes_tables());
    tables
}

/// The tables of Berth's own form, one per code.
fn berth_form_tables() -> Vec<(ErrorCode, Vec<Row>)> {
    let long_segment = "a".repeat(256);
    vec![
        (
            VolumeInvalidName,
            vec![
                vol_row(
                    "uppercase",
                    json!({"name": "Work"}),
                    "name",
                    VolumeInvalidName,
                ),
                vol_row(
                    "leading dash",
                    json!({"name": "-work"}),
                    "name",
                    VolumeInvalidName,
                ),
                vol_row(
                    "underscore",
                    json!({"name": "my_work"}),
                    "name",
                    VolumeInvalidName,
                ),
                vol_row("empty", json!({"name": ""}), "name", VolumeInvalidName),
                vol_row(
                    "64 characters",
                    json!({"name": "a".repeat(64)}),
                    "name",
                    VolumeInvalidName,
                ),
            ],
        ),
        (
            VolumeDuplicateName,
            vec![row(
                "same name twice",
                with_volumes(vec![
                    volume(json!({})),
                    volume(json!({"mountPath": "/other"})),
                ]),
                &[("volumes[1].name", VolumeDuplicateName)],
            )],
        ),
        (
            VolumeInvalidBackend,
            vec![
                vol_row(
                    "zero backends",
                    json!({"pvc": null}),
                    "",
                    VolumeInvalidBackend,
                ),
                vol_row(
                    "two backends",
                    json!({"host": {"path": "/data/opensandbox"}}),
                    "",
                    VolumeInvalidBackend,
                ),
                vol_row(
                    "four backends",
                    json!({"host": {"path": "/data/opensandbox"}, "nfs": {"server": "x", "path": "/e"},
                     "ossfs": {"bucket": "abc", "endpoint": "e", "accessKeyId": "a", "accessKeySecret": "b"}}),
                    "",
                    VolumeInvalidBackend,
                ),
            ],
        ),
        (
            VolumeInvalidMountPath,
            vec![
                vol_row(
                    "relative",
                    json!({"mountPath": "workspace"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "empty",
                    json!({"mountPath": ""}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "dot-dot",
                    json!({"mountPath": "/a/../b"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "double slash",
                    json!({"mountPath": "/a//b"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "trailing slash",
                    json!({"mountPath": "/a/"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "dot segment",
                    json!({"mountPath": "/a/./b"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "colon mode suffix",
                    json!({"mountPath": "/mnt/a:ro"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "comma",
                    json!({"mountPath": "/mnt/a,b"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "NUL",
                    json!({"mountPath": "/a\u{0}b"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "newline",
                    json!({"mountPath": "/a\nb"}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "256-byte segment",
                    json!({"mountPath": format!("/{long_segment}")}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
                vol_row(
                    "over 4096 bytes",
                    json!({"mountPath": "/a".repeat(2049)}),
                    "mountPath",
                    VolumeInvalidMountPath,
                ),
            ],
        ),
        (
            VolumeReservedMountPath,
            [
                "/",
                "/proc",
                "/proc/x",
                "/sys",
                "/sys/fs/cgroup",
                "/dev",
                "/dev/shm",
                "/etc/hosts",
                "/etc/hostname",
                "/etc/resolv.conf",
                "/opt/opensandbox",
                "/opt/opensandbox/bin",
            ]
            .into_iter()
            .map(|p| {
                vol_row(
                    p,
                    json!({"mountPath": p}),
                    "mountPath",
                    VolumeReservedMountPath,
                )
            })
            .collect(),
        ),
        (
            VolumeDuplicateMountPath,
            vec![
                row(
                    "same path",
                    with_volumes(vec![volume(json!({})), volume(json!({"name": "b"}))]),
                    &[("volumes[1].mountPath", VolumeDuplicateMountPath)],
                ),
                row(
                    "trailing-slash spelling",
                    with_volumes(vec![
                        volume(json!({})),
                        volume(json!({"name": "b", "mountPath": "/workspace/"})),
                    ]),
                    &[
                        ("volumes[1].mountPath", VolumeInvalidMountPath),
                        ("volumes[1].mountPath", VolumeDuplicateMountPath),
                    ],
                ),
                row(
                    "dot-dot spelling",
                    with_volumes(vec![
                        volume(json!({})),
                        volume(json!({"name": "b", "mountPath": "/x/../workspace"})),
                    ]),
                    &[
                        ("volumes[1].mountPath", VolumeInvalidMountPath),
                        ("volumes[1].mountPath", VolumeDuplicateMountPath),
                    ],
                ),
                row(
                    "double-slash spelling",
                    with_volumes(vec![
                        volume(json!({"mountPath": "/a/b"})),
                        volume(json!({"name": "b", "mountPath": "//a//b"})),
                    ]),
                    &[
                        ("volumes[1].mountPath", VolumeInvalidMountPath),
                        ("volumes[1].mountPath", VolumeDuplicateMountPath),
                    ],
                ),
            ],
        ),
        (VolumeInvalidSubPath, {
            let mut rows: Vec<Row> = [
                "a/../b",
                "..",
                "../x",
                "a/..",
                "./a",
                ".",
                "a/./b",
                "a//b",
                "a/",
                "/abs",
                "a\\b",
                "..\\..\\x",
                "a\u{0}b",
                "a\nb",
                "tab\there",
            ]
            .into_iter()
            .map(|s| {
                vol_row(
                    &format!("{s:?}"),
                    json!({"subPath": s}),
                    "subPath",
                    VolumeInvalidSubPath,
                )
            })
            .collect();
            rows.push(vol_row(
                "256-byte segment",
                json!({"subPath": long_segment}),
                "subPath",
                VolumeInvalidSubPath,
            ));
            rows.push(vol_row(
                "4097 bytes",
                json!({"subPath": format!("{}b", "a/".repeat(2048))}),
                "subPath",
                VolumeInvalidSubPath,
            ));
            rows
        }),
        (
            VolumeInvalidHostPath,
            vec![
                vol_row(
                    "relative",
                    host("data/opensandbox"),
                    "host.path",
                    VolumeInvalidHostPath,
                ),
                vol_row(
                    "dot-dot escape",
                    host("/data/opensandbox/../../etc"),
                    "host.path",
                    VolumeInvalidHostPath,
                ),
                vol_row(
                    "trailing slash",
                    host("/data/opensandbox/"),
                    "host.path",
                    VolumeInvalidHostPath,
                ),
                vol_row(
                    "double slash",
                    host("/data//opensandbox"),
                    "host.path",
                    VolumeInvalidHostPath,
                ),
                vol_row(
                    "windows drive",
                    host("C:\\data"),
                    "host.path",
                    VolumeInvalidHostPath,
                ),
                vol_row(
                    "NUL",
                    host("/data/opensandbox/a\u{0}"),
                    "host.path",
                    VolumeInvalidHostPath,
                ),
                vol_row("empty", host(""), "host.path", VolumeInvalidHostPath),
            ],
        ),
        (
            VolumeHostPathNotAllowed,
            vec![
                vol_row(
                    "sibling sharing a prefix",
                    host("/data/opensandbox-evil"),
                    "host.path",
                    VolumeHostPathNotAllowed,
                ),
                vol_row(
                    "parent of a root",
                    host("/data"),
                    "host.path",
                    VolumeHostPathNotAllowed,
                ),
                vol_row(
                    "elsewhere",
                    host("/etc"),
                    "host.path",
                    VolumeHostPathNotAllowed,
                ),
                vol_row(
                    "the filesystem root",
                    host("/"),
                    "host.path",
                    VolumeHostPathNotAllowed,
                ),
                Row {
                    policy: StoragePolicy {
                        allowed_host_roots: vec![],
                        ..policy()
                    },
                    ..vol_row(
                        "empty allowlist",
                        host("/data/opensandbox"),
                        "host.path",
                        VolumeHostPathNotAllowed,
                    )
                },
            ],
        ),
        (
            VolumeInvalidPvcName,
            [
                "a",
                "Sessions",
                "my_claim",
                "-a",
                "a-",
                "a..b",
                &"a".repeat(254),
                "",
            ]
            .into_iter()
            .map(|n| {
                vol_row(
                    &format!("{n:.20}"),
                    pvc(json!({"claimName": n})),
                    "pvc.claimName",
                    VolumeInvalidPvcName,
                )
            })
            .collect(),
        ),
        (
            VolumeInvalidPvcStorage,
            ["abc", "512m", "0", "-1Gi", "1.5.Gi"]
                .into_iter()
                .map(|s| {
                    vol_row(
                        s,
                        pvc(json!({"storage": s})),
                        "pvc.storage",
                        VolumeInvalidPvcStorage,
                    )
                })
                .collect(),
        ),
        (
            VolumeInvalidPvcStorageClass,
            vec![
                vol_row(
                    "underscore",
                    pvc(json!({"storageClass": "fast_ssd"})),
                    "pvc.storageClass",
                    VolumeInvalidPvcStorageClass,
                ),
                vol_row(
                    "empty",
                    pvc(json!({"storageClass": ""})),
                    "pvc.storageClass",
                    VolumeInvalidPvcStorageClass,
                ),
            ],
        ),
        (
            VolumeInvalidPvcAccessMode,
            vec![
                vol_row(
                    "abbreviation",
                    pvc(json!({"accessModes": ["RWO"]})),
                    "pvc.accessModes[0]",
                    VolumeInvalidPvcAccessMode,
                ),
                vol_row(
                    "repeated",
                    pvc(json!({"accessModes": ["ReadWriteOnce", "ReadWriteOnce"]})),
                    "pvc.accessModes[1]",
                    VolumeInvalidPvcAccessMode,
                ),
            ],
        ),
        (
            VolumeInvalidOssfsBucket,
            ["../..", "ab", "My-Bucket", "-bucket", "a_b_c"]
                .into_iter()
                .map(|b| {
                    vol_row(
                        b,
                        ossfs(json!({"bucket": b})),
                        "ossfs.bucket",
                        VolumeInvalidOssfsBucket,
                    )
                })
                .collect(),
        ),
        (
            VolumeInvalidOssfsEndpoint,
            [
                "https://oss-cn-hangzhou.aliyuncs.com",
                "",
                "a b",
                "host:8080",
                "evil.com/path",
            ]
            .into_iter()
            .map(|e| {
                vol_row(
                    e,
                    ossfs(json!({"endpoint": e})),
                    "ossfs.endpoint",
                    VolumeInvalidOssfsEndpoint,
                )
            })
            .collect(),
        ),
        (
            VolumeInvalidOssfsVersion,
            vec![
                vol_row(
                    "3.0",
                    ossfs(json!({"version": "3.0"})),
                    "ossfs.version",
                    VolumeInvalidOssfsVersion,
                ),
                vol_row(
                    "2",
                    ossfs(json!({"version": "2"})),
                    "ossfs.version",
                    VolumeInvalidOssfsVersion,
                ),
            ],
        ),
        (
            VolumeInvalidOssfsOption,
            [
                "passwd_file=/etc/passwd-s3fs",
                "url=http://evil",
                "allow_other",
                "uid=0",
                "-o",
                "kernel_cache=1",
                "",
            ]
            .into_iter()
            .map(|o| {
                vol_row(
                    o,
                    ossfs(json!({"options": ["noxattr", o]})),
                    "ossfs.options[1]",
                    VolumeInvalidOssfsOption,
                )
            })
            .collect(),
        ),
        (
            VolumeInvalidOssfsCredentials,
            vec![
                vol_row(
                    "newline in secret",
                    ossfs(json!({"accessKeySecret": "s3cr3t\nurl=http://evil"})),
                    "ossfs",
                    VolumeInvalidOssfsCredentials,
                ),
                vol_row(
                    "empty key id",
                    ossfs(json!({"accessKeyId": ""})),
                    "ossfs",
                    VolumeInvalidOssfsCredentials,
                ),
                vol_row(
                    "space in key id",
                    ossfs(json!({"accessKeyId": "AK ID"})),
                    "ossfs",
                    VolumeInvalidOssfsCredentials,
                ),
            ],
        ),
        (
            VolumeInvalidNfsServer,
            ["", "a b", "nfs://server", "300.1.1.1", "server:/export"]
                .into_iter()
                .map(|s| {
                    vol_row(
                        s,
                        nfs(json!({"server": s})),
                        "nfs.server",
                        VolumeInvalidNfsServer,
                    )
                })
                .collect(),
        ),
        (
            VolumeInvalidNfsPath,
            ["exports", "/exports/../etc", "/exports/", ""]
                .into_iter()
                .map(|p| vol_row(p, nfs(json!({"path": p})), "nfs.path", VolumeInvalidNfsPath))
                .collect(),
        ),
        (
            VolumeInvalidNfsOption,
            ["addr=10.0.0.1", "vers=5", "ro", "-o"]
                .into_iter()
                .map(|o| {
                    vol_row(
                        o,
                        nfs(json!({"options": [o]})),
                        "nfs.options[0]",
                        VolumeInvalidNfsOption,
                    )
                })
                .collect(),
        ),
        (
            SandboxInvalidParameter,
            vec![
                row(
                    "no image nor snapshot",
                    request(json!({"image": null})),
                    &[("image", SandboxInvalidParameter)],
                ),
                row(
                    "image and snapshot",
                    request(json!({"snapshotId": "snap"})),
                    &[("image", SandboxInvalidParameter)],
                ),
                row(
                    "blank image",
                    request(json!({"image": {"uri": "  "}})),
                    &[("image.uri", SandboxInvalidParameter)],
                ),
                row(
                    "image with spaces",
                    request(json!({"image": {"uri": "python 3"}})),
                    &[("image.uri", SandboxInvalidParameter)],
                ),
                row(
                    "half an auth",
                    request(json!({"image": {"uri": "a", "auth": {"username": "u"}}})),
                    &[("image.auth", SandboxInvalidParameter)],
                ),
                row(
                    "image without entrypoint",
                    request(json!({"entrypoint": null})),
                    &[("entrypoint", SandboxInvalidParameter)],
                ),
                row(
                    "empty entrypoint",
                    request(json!({"entrypoint": []})),
                    &[("entrypoint", SandboxInvalidParameter)],
                ),
                row(
                    "blank executable",
                    request(json!({"entrypoint": [" "]})),
                    &[("entrypoint", SandboxInvalidParameter)],
                ),
                row(
                    "timeout below 60",
                    request(json!({"timeout": 59})),
                    &[("timeout", SandboxInvalidParameter)],
                ),
                row(
                    "negative timeout",
                    request(json!({"timeout": -1})),
                    &[("timeout", SandboxInvalidParameter)],
                ),
                row(
                    "timeout above the maximum",
                    request(json!({"timeout": 86_401})),
                    &[("timeout", SandboxInvalidParameter)],
                ),
                row(
                    "no resourceLimits",
                    request(json!({"resourceLimits": null})),
                    &[("resourceLimits", SandboxInvalidParameter)],
                ),
                row(
                    "memory 512m",
                    request(json!({"resourceLimits": {"memory": "512m"}})),
                    &[("resourceLimits[\"memory\"]", SandboxInvalidParameter)],
                ),
                row(
                    "cpu word",
                    request(json!({"resourceLimits": {"cpu": "two"}})),
                    &[("resourceLimits[\"cpu\"]", SandboxInvalidParameter)],
                ),
                row(
                    "cpu zero",
                    request(json!({"resourceLimits": {"cpu": "0"}})),
                    &[("resourceLimits[\"cpu\"]", SandboxInvalidParameter)],
                ),
                row(
                    "env name with =",
                    request(json!({"env": {"A=B": "1"}})),
                    &[("env[\"A=B\"]", SandboxInvalidParameter)],
                ),
                row(
                    "env value with NUL",
                    request(json!({"env": {"A": "x\u{0}y"}})),
                    &[("env[\"A\"]", SandboxInvalidParameter)],
                ),
                row(
                    "257 env entries",
                    request(
                        json!({"env": (0..257).map(|i| (format!("E{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
                    ),
                    &[("env", SandboxInvalidParameter)],
                ),
                row(
                    "65 metadata entries",
                    request(
                        json!({"metadata": (0..65).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
                    ),
                    &[("metadata", SandboxInvalidParameter)],
                ),
                row(
                    "65 volumes",
                    with_volumes(
                        (0..65)
                            .map(|i| {
                                volume(
                                    json!({"name": format!("v{i}"), "mountPath": format!("/v{i}")}),
                                )
                            })
                            .collect(),
                    ),
                    &[("volumes", SandboxInvalidParameter)],
                ),
            ],
        ),
        (
            SandboxUnsupportedFeature,
            vec![
                row(
                    "snapshotId",
                    request(json!({"image": null, "entrypoint": null, "snapshotId": "snap_123"})),
                    &[("snapshotId", SandboxUnsupportedFeature)],
                ),
                row(
                    "secureAccess true",
                    request(json!({"secureAccess": true})),
                    &[("secureAccess", SandboxUnsupportedFeature)],
                ),
                row(
                    "networkPolicy with rules",
                    request(
                        json!({"networkPolicy": {"defaultAction": "deny", "egress": [{"action": "allow", "target": "example.com"}]}}),
                    ),
                    &[("networkPolicy", SandboxUnsupportedFeature)],
                ),
                row(
                    "credentialProxy enabled",
                    request(json!({"credentialProxy": {"enabled": true}})),
                    &[("credentialProxy.enabled", SandboxUnsupportedFeature)],
                ),
                row(
                    "extensions",
                    request(json!({"extensions": {"access.renew.extend.seconds": "600"}})),
                    &[(
                        "extensions[\"access.renew.extend.seconds\"]",
                        SandboxUnsupportedFeature,
                    )],
                ),
                row(
                    "templateId",
                    request(json!({"templateId": "t"})),
                    &[("templateId", SandboxUnsupportedFeature)],
                ),
                row(
                    "resourceRequests",
                    request(json!({"resourceRequests": {"cpu": "1"}})),
                    &[("resourceRequests[\"cpu\"]", SandboxUnsupportedFeature)],
                ),
                row(
                    "lifecycle",
                    request(json!({"lifecycle": {"preStop": {}}})),
                    &[("lifecycle", SandboxUnsupportedFeature)],
                ),
                row(
                    "gpu",
                    request(json!({"resourceLimits": {"gpu": "1"}})),
                    &[("resourceLimits[\"gpu\"]", SandboxUnsupportedFeature)],
                ),
            ],
        ),
        (
            SandboxInvalidMetadataLabel,
            vec![
                row(
                    "reserved prefix",
                    request(json!({"metadata": {"opensandbox.io/id": "x"}})),
                    &[(
                        "metadata[\"opensandbox.io/id\"]",
                        SandboxInvalidMetadataLabel,
                    )],
                ),
                row(
                    "value with a space",
                    request(json!({"metadata": {"name": "Data Processing"}})),
                    &[("metadata[\"name\"]", SandboxInvalidMetadataLabel)],
                ),
                row(
                    "key with two slashes",
                    request(json!({"metadata": {"a/b/c": "x"}})),
                    &[("metadata[\"a/b/c\"]", SandboxInvalidMetadataLabel)],
                ),
                row(
                    "64-character value",
                    request(json!({"metadata": {"k": "v".repeat(64)}})),
                    &[("metadata[\"k\"]", SandboxInvalidMetadataLabel)],
                ),
            ],
        ),
    ]
}

/// A request in the Kubernetes form: `volumes` with their sources, `mounts` saying where.
fn k8s(volumes: Vec<Value>, mounts: Vec<Value>) -> Value {
    request(json!({ "volumes": volumes, "mounts": mounts }))
}

/// A Kubernetes-form volume `name` on claim `sessions`, with `patch` merged in.
fn k8s_claim(name: &str, patch: Value) -> Value {
    let mut v = json!({"name": name, "persistentVolumeClaim": {"claimName": "sessions"}});
    common::merge(&mut v, patch);
    v
}

/// A mount of volume `name` at `path`, with `patch` merged in.
fn mount(name: &str, path: &str, patch: Value) -> Value {
    let mut m = json!({"name": name, "mountPath": path});
    common::merge(&mut m, patch);
    m
}

/// The Kubernetes form's rows, each under the code it is about: the same rules as Berth's form,
/// reported at the fields the user wrote, plus the rules only this form has.
fn kubernetes_rows() -> Vec<(ErrorCode, Row)> {
    let one = |what: &str, volume: Value, field: &str, code: ErrorCode| {
        (
            code,
            row(
                what,
                k8s(vec![volume], vec![mount("work", "/workspace", json!({}))]),
                &[(field, code)],
            ),
        )
    };
    let mount_row = |what: &str, patch: Value, field: &str, code: ErrorCode| {
        (
            code,
            row(
                what,
                k8s(
                    vec![k8s_claim("work", json!({}))],
                    vec![
                        mount("work", "/workspace", json!({})),
                        mount("work", "/cache", patch),
                    ],
                ),
                &[(field, code)],
            ),
        )
    };
    vec![
        (
            VolumeInvalidName,
            row(
                "kubernetes: uppercase name, mounted by that name",
                k8s(
                    vec![k8s_claim("Work", json!({}))],
                    vec![mount("Work", "/workspace", json!({}))],
                ),
                &[("volumes[0].name", VolumeInvalidName)],
            ),
        ),
        (
            VolumeDuplicateName,
            row(
                "kubernetes: two volumes with one name",
                k8s(
                    vec![
                        k8s_claim("work", json!({})),
                        k8s_claim(
                            "work",
                            json!({"persistentVolumeClaim": {"claimName": "other"}}),
                        ),
                    ],
                    vec![mount("work", "/workspace", json!({}))],
                ),
                &[("volumes[1].name", VolumeDuplicateName)],
            ),
        ),
        (
            VolumeDuplicateName,
            row(
                "kubernetes: a second mount's derived name is another volume's",
                k8s(
                    vec![k8s_claim("work", json!({})), k8s_claim("work-2", json!({}))],
                    vec![
                        mount("work", "/workspace", json!({})),
                        mount("work-2", "/other", json!({})),
                        mount("work", "/cache", json!({})),
                    ],
                ),
                &[("mounts[2].name", VolumeDuplicateName)],
            ),
        ),
        (
            VolumeDuplicateName,
            row(
                "kubernetes: derived names of two cut-short names meet",
                k8s(
                    vec![
                        k8s_claim(&format!("{}a", "x".repeat(62)), json!({})),
                        k8s_claim(&format!("{}b", "x".repeat(62)), json!({})),
                    ],
                    vec![
                        mount(&format!("{}a", "x".repeat(62)), "/a", json!({})),
                        mount(&format!("{}b", "x".repeat(62)), "/b", json!({})),
                        mount(&format!("{}a", "x".repeat(62)), "/a2", json!({})),
                        mount(&format!("{}b", "x".repeat(62)), "/b2", json!({})),
                    ],
                ),
                &[("mounts[3].name", VolumeDuplicateName)],
            ),
        ),
        one(
            "kubernetes: no source",
            json!({"name": "work"}),
            "volumes[0]",
            VolumeInvalidBackend,
        ),
        one(
            "kubernetes: two sources",
            k8s_claim("work", json!({"hostPath": {"path": "/data/opensandbox"}})),
            "volumes[0]",
            VolumeInvalidBackend,
        ),
        mount_row(
            "kubernetes: relative mountPath",
            json!({"mountPath": "cache"}),
            "mounts[1].mountPath",
            VolumeInvalidMountPath,
        ),
        (
            VolumeInvalidMountPath,
            row(
                "berth form: no mountPath",
                with_volumes(vec![volume(json!({"mountPath": null}))]),
                &[("volumes[0].mountPath", VolumeInvalidMountPath)],
            ),
        ),
        mount_row(
            "kubernetes: /proc",
            json!({"mountPath": "/proc"}),
            "mounts[1].mountPath",
            VolumeReservedMountPath,
        ),
        mount_row(
            "kubernetes: two mounts at one path",
            json!({"mountPath": "/workspace"}),
            "mounts[1].mountPath",
            VolumeDuplicateMountPath,
        ),
        mount_row(
            "kubernetes: dot-dot subPath",
            json!({"subPath": "../up"}),
            "mounts[1].subPath",
            VolumeInvalidSubPath,
        ),
        one(
            "kubernetes: relative hostPath",
            json!({"name": "work", "hostPath": {"path": "data/opensandbox"}}),
            "volumes[0].hostPath.path",
            VolumeInvalidHostPath,
        ),
        one(
            "kubernetes: hostPath outside the roots",
            json!({"name": "work", "hostPath": {"path": "/etc"}}),
            "volumes[0].hostPath.path",
            VolumeHostPathNotAllowed,
        ),
        one(
            "kubernetes: bad claimName",
            k8s_claim(
                "work",
                json!({"persistentVolumeClaim": {"claimName": "My_Claim"}}),
            ),
            "volumes[0].persistentVolumeClaim.claimName",
            VolumeInvalidPvcName,
        ),
        one(
            "kubernetes: bad nfs server",
            json!({"name": "work", "nfs": {"server": "a b", "path": "/exports"}}),
            "volumes[0].nfs.server",
            VolumeInvalidNfsServer,
        ),
        one(
            "kubernetes: relative nfs path",
            json!({"name": "work", "nfs": {"server": "nas", "path": "exports"}}),
            "volumes[0].nfs.path",
            VolumeInvalidNfsPath,
        ),
        one(
            "kubernetes: nfs option off the allowlist",
            json!({"name": "work", "nfs": {"server": "nas", "path": "/e", "options": ["addr=1.2.3.4"]}}),
            "volumes[0].nfs.options[0]",
            VolumeInvalidNfsOption,
        ),
        one(
            "kubernetes: hostPath type Directory",
            json!({"name": "work", "hostPath": {"path": "/data/opensandbox", "type": "Directory"}}),
            "volumes[0].hostPath.type",
            SandboxUnsupportedFeature,
        ),
        one(
            "kubernetes: hostPath type File",
            json!({"name": "work", "hostPath": {"path": "/data/opensandbox/f", "type": "File"}}),
            "volumes[0].hostPath.type",
            SandboxUnsupportedFeature,
        ),
        one(
            "kubernetes: hostPath type Socket",
            json!({"name": "work", "hostPath": {"path": "/data/opensandbox/s", "type": "Socket"}}),
            "volumes[0].hostPath.type",
            SandboxUnsupportedFeature,
        ),
        one(
            "kubernetes: hostPath type misspelt",
            json!({"name": "work", "hostPath": {"path": "/data/opensandbox", "type": "directory"}}),
            "volumes[0].hostPath.type",
            SandboxInvalidParameter,
        ),
        (
            SandboxInvalidParameter,
            row(
                "kubernetes: 65 mounts",
                k8s(
                    vec![k8s_claim("work", json!({}))],
                    (0..65)
                        .map(|i| mount("work", &format!("/m{i}"), json!({})))
                        .collect(),
                ),
                &[("mounts", SandboxInvalidParameter)],
            ),
        ),
    ]
}

/// The rules only the Kubernetes form has: tables of their own.
fn kubernetes_tables() -> Vec<(ErrorCode, Vec<Row>)> {
    vec![
        (
            VolumeUnknownVolume,
            vec![
                row(
                    "mount of a volume that is not there",
                    k8s(
                        vec![k8s_claim("work", json!({}))],
                        vec![
                            mount("work", "/workspace", json!({})),
                            mount("cache", "/cache", json!({})),
                        ],
                    ),
                    &[("mounts[1].name", VolumeUnknownVolume)],
                ),
                row(
                    "mounts without volumes",
                    request(json!({"mounts": [{"name": "work", "mountPath": "/w"}]})),
                    &[("mounts[0].name", VolumeUnknownVolume)],
                ),
                row(
                    "names compare exactly",
                    k8s(
                        vec![k8s_claim("work", json!({}))],
                        vec![
                            mount("work", "/workspace", json!({})),
                            mount("Work", "/cache", json!({})),
                        ],
                    ),
                    &[("mounts[1].name", VolumeUnknownVolume)],
                ),
            ],
        ),
        (
            VolumeNotMounted,
            vec![
                row(
                    "volume never mounted",
                    k8s(
                        vec![k8s_claim("work", json!({})), k8s_claim("cache", json!({}))],
                        vec![mount("work", "/workspace", json!({}))],
                    ),
                    &[("volumes[1].name", VolumeNotMounted)],
                ),
                row(
                    "a Kubernetes source and no mounts",
                    with_volumes(vec![k8s_claim("work", json!({}))]),
                    &[("volumes[0].name", VolumeNotMounted)],
                ),
            ],
        ),
        (
            VolumeMixedForms,
            vec![
                row(
                    "berth volume beside mounts",
                    k8s(
                        vec![volume(json!({}))],
                        vec![mount("work", "/other", json!({}))],
                    ),
                    &[("volumes[0].mountPath", VolumeMixedForms)],
                ),
                row(
                    "berth and kubernetes volumes in one request",
                    with_volumes(vec![
                        volume(json!({})),
                        json!({"name": "data", "hostPath": {"path": "/data/opensandbox"}}),
                    ]),
                    &[
                        ("volumes[0].mountPath", VolumeMixedForms),
                        ("volumes[1].name", VolumeNotMounted),
                    ],
                ),
                row(
                    "pvc and persistentVolumeClaim in one volume",
                    k8s(
                        vec![k8s_claim("work", json!({"pvc": {"claimName": "x2"}}))],
                        vec![mount("work", "/workspace", json!({}))],
                    ),
                    &[("volumes[0].pvc", VolumeMixedForms)],
                ),
                row(
                    "subPath on a kubernetes volume",
                    k8s(
                        vec![k8s_claim("work", json!({"subPath": "a"}))],
                        vec![mount("work", "/workspace", json!({}))],
                    ),
                    &[("volumes[0].subPath", VolumeMixedForms)],
                ),
                row(
                    "readOnly on a kubernetes volume",
                    k8s(
                        vec![k8s_claim("work", json!({"readOnly": true}))],
                        vec![mount("work", "/workspace", json!({}))],
                    ),
                    &[("volumes[0].readOnly", VolumeMixedForms)],
                ),
                row(
                    "ossfs beside mounts",
                    k8s(
                        vec![json!({"name": "work", "ossfs": {"bucket": "my-bucket",
                            "endpoint": "oss-cn-hangzhou.aliyuncs.com",
                            "accessKeyId": "AKID", "accessKeySecret": "s3cr3t"}})],
                        vec![mount("work", "/workspace", json!({}))],
                    ),
                    &[("volumes[0].ossfs", VolumeMixedForms)],
                ),
            ],
        ),
    ]
}

fn run_rows(rows: &[Row]) -> Vec<String> {
    let mut failures = Vec::new();
    for row in rows {
        match validate(row.request.clone(), &row.policy) {
            Ok(_) => failures.push(format!("{}: accepted, expected {:?}", row.what, row.expect)),
            Err(violations) => {
                let got: Vec<(String, ErrorCode)> = violations
                    .as_slice()
                    .iter()
                    .map(|v| (v.field.clone(), v.code))
                    .collect();
                if got != row.expect {
                    failures.push(format!(
                        "{}: got {got:?}, expected {:?} ({violations})",
                        row.what, row.expect
                    ));
                }
                // The response code is the first violation's, and the message names every field.
                let body = violations.to_error_response();
                assert_eq!(body.code, row.expect[0].1.as_str(), "{}", row.what);
                for (field, _) in &row.expect {
                    assert!(
                        body.message.contains(field.as_str()),
                        "{}: message {:?} does not name {field}",
                        row.what,
                        body.message
                    );
                }
            }
        }
    }
    failures
}

fn run_table(code: ErrorCode) {
    let tables = tables();
    let (_, rows) = tables
        .iter()
        .find(|(c, _)| *c == code)
        .unwrap_or_else(|| panic!("no table for {code}"));
    assert!(!rows.is_empty());
    let failures = run_rows(rows);
    assert!(failures.is_empty(), "{code}:\n{}", failures.join("\n"));
}

macro_rules! table_tests {
    ($($test:ident => $code:ident,)+) => {
        $( #[test] fn $test() { run_table($code); } )+

        /// Every table above has its own test.
        const TABLE_TESTS: &[ErrorCode] = &[$($code,)+];
    };
}

table_tests! {
    volume_invalid_name => VolumeInvalidName,
    volume_duplicate_name => VolumeDuplicateName,
    volume_invalid_backend => VolumeInvalidBackend,
    volume_invalid_mount_path => VolumeInvalidMountPath,
    volume_reserved_mount_path => VolumeReservedMountPath,
    volume_duplicate_mount_path => VolumeDuplicateMountPath,
    volume_invalid_sub_path => VolumeInvalidSubPath,
    volume_invalid_host_path => VolumeInvalidHostPath,
    volume_host_path_not_allowed => VolumeHostPathNotAllowed,
    volume_invalid_pvc_name => VolumeInvalidPvcName,
    volume_invalid_pvc_storage => VolumeInvalidPvcStorage,
    volume_invalid_pvc_storage_class => VolumeInvalidPvcStorageClass,
    volume_invalid_pvc_access_mode => VolumeInvalidPvcAccessMode,
    volume_invalid_ossfs_bucket => VolumeInvalidOssfsBucket,
    volume_invalid_ossfs_endpoint => VolumeInvalidOssfsEndpoint,
    volume_invalid_ossfs_version => VolumeInvalidOssfsVersion,
    volume_invalid_ossfs_option => VolumeInvalidOssfsOption,
    volume_invalid_ossfs_credentials => VolumeInvalidOssfsCredentials,
    volume_invalid_nfs_server => VolumeInvalidNfsServer,
    volume_invalid_nfs_path => VolumeInvalidNfsPath,
    volume_invalid_nfs_option => VolumeInvalidNfsOption,
    sandbox_invalid_parameter => SandboxInvalidParameter,
    sandbox_unsupported_feature => SandboxUnsupportedFeature,
    sandbox_invalid_metadata_label => SandboxInvalidMetadataLabel,
    volume_unknown_volume => VolumeUnknownVolume,
    volume_not_mounted => VolumeNotMounted,
    volume_mixed_forms => VolumeMixedForms,
}

#[test]
fn every_table_has_a_test() {
    let codes: Vec<ErrorCode> = tables().iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, TABLE_TESTS, "tables and table tests differ");
}

/// Requests right next to a rule that must pass.
#[test]
fn near_misses_are_accepted() {
    let accepted = [
        (
            "nested mount paths",
            with_volumes(vec![
                volume(json!({})),
                volume(json!({"name": "b", "mountPath": "/workspace/sub"})),
            ]),
        ),
        (
            "prefix-sharing mount paths",
            with_volumes(vec![
                volume(json!({"mountPath": "/data"})),
                volume(json!({"name": "b", "mountPath": "/data2"})),
            ]),
        ),
        (
            "/procx is not /proc",
            with_volumes(vec![volume(json!({"mountPath": "/procx"}))]),
        ),
        (
            "/etc/hosts2 is not /etc/hosts",
            with_volumes(vec![volume(json!({"mountPath": "/etc/hosts2"}))]),
        ),
        (
            "/opt/opensandboxes",
            with_volumes(vec![volume(json!({"mountPath": "/opt/opensandboxes"}))]),
        ),
        (
            "..hidden is a name",
            with_volumes(vec![volume(json!({"subPath": "..hidden/a..b/c.."}))]),
        ),
        (
            "session subPath",
            with_volumes(vec![volume(json!({"subPath": "uid-1/session-7"}))]),
        ),
        (
            "unicode subPath",
            with_volumes(vec![volume(json!({"subPath": "ü/日本"}))]),
        ),
        (
            "255-byte segment",
            with_volumes(vec![volume(json!({"subPath": "a".repeat(255)}))]),
        ),
        (
            "4096-byte subPath",
            with_volumes(vec![volume(
                json!({"subPath": format!("{}ab", "a/".repeat(2047))}),
            )]),
        ),
        (
            "empty subPath means the root",
            with_volumes(vec![volume(json!({"subPath": ""}))]),
        ),
        (
            "host root itself",
            with_volumes(vec![volume(host("/data/opensandbox"))]),
        ),
        (
            "host below a root",
            with_volumes(vec![volume(host("/data/opensandbox/x/y"))]),
        ),
        (
            "second root",
            with_volumes(vec![volume(host("/srv/shared"))]),
        ),
        (
            "dotted claim",
            with_volumes(vec![volume(pvc(
                json!({"claimName": "team.sessions", "storage": "1G",
            "storageClass": "fast", "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}),
            ))]),
        ),
        (
            "full ossfs",
            with_volumes(vec![volume(ossfs(
                json!({"version": "1.0", "options": ["kernel_cache", "umask=022"]}),
            ))]),
        ),
        (
            "nfs by IPv6",
            with_volumes(vec![volume(nfs(
                json!({"server": "fd00::1", "options": ["vers=4.1", "hard"]}),
            ))]),
        ),
        ("timeout 60", request(json!({"timeout": 60}))),
        (
            "timeout at the maximum",
            request(json!({"timeout": 86_400})),
        ),
        ("null timeout", request(json!({"timeout": null}))),
        (
            "secureAccess false",
            request(json!({"secureAccess": false})),
        ),
        ("empty networkPolicy", request(json!({"networkPolicy": {}}))),
        (
            "credentialProxy disabled",
            request(json!({"credentialProxy": {"enabled": false}})),
        ),
        ("empty extensions", request(json!({"extensions": {}}))),
        ("gpu 0", request(json!({"resourceLimits": {"gpu": "0"}}))),
        (
            "no limits",
            request(json!({"resourceLimits": null}))
                .tap(|r| common::merge(r, json!({"resourceLimits": {}}))),
        ),
        (
            "prefixed metadata",
            request(json!({"metadata": {"example.com/team": "ml", "empty": ""}})),
        ),
        (
            "64 metadata entries",
            request(
                json!({"metadata": (0..64).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            ),
        ),
        (
            "64 volumes",
            with_volumes(
                (0..64)
                    .map(|i| {
                        volume(json!({"name": format!("v{i}"), "mountPath": format!("/v{i}")}))
                    })
                    .collect(),
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (what, request) in accepted {
        if let Err(v) = validate(request, &policy()) {
            failures.push(format!("{what}: {v}"));
        }
    }
    assert!(failures.is_empty(), "refused:\n{}", failures.join("\n"));
}

trait Tap {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for Value {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[test]
fn root_allowlist_admits_everything_below_it() {
    let root_only = StoragePolicy {
        allowed_host_roots: vec![HostPath::new("/").unwrap()],
        ..policy()
    };
    for path in ["/", "/etc", "/data/opensandbox-evil/x"] {
        assert!(
            validate(with_volumes(vec![volume(host(path))]), &root_only).is_ok(),
            "{path}"
        );
    }
}

#[test]
fn every_violation_is_reported_at_once_in_field_order() {
    let bad = request(json!({
        "timeout": 5,
        "metadata": {"opensandbox.io/x": "y"},
        "volumes": [
            {"name": "Bad", "pvc": {"claimName": "x"}, "mountPath": "/proc", "subPath": "../up"},
            {"name": "ok", "mountPath": "/workspace"}
        ]
    }));
    let v = validate(bad, &policy()).unwrap_err();
    let fields: Vec<(&str, ErrorCode)> = v
        .as_slice()
        .iter()
        .map(|v| (v.field.as_str(), v.code))
        .collect();
    assert_eq!(
        fields,
        [
            ("timeout", SandboxInvalidParameter),
            (
                "metadata[\"opensandbox.io/x\"]",
                SandboxInvalidMetadataLabel
            ),
            ("volumes[0].name", VolumeInvalidName),
            ("volumes[0].mountPath", VolumeReservedMountPath),
            ("volumes[0].subPath", VolumeInvalidSubPath),
            ("volumes[0].pvc.claimName", VolumeInvalidPvcName),
            ("volumes[1]", VolumeInvalidBackend),
        ]
    );
    let body = v.to_error_response();
    assert_eq!(body.code, "SANDBOX::INVALID_PARAMETER");
    assert!(
        body.message
            .starts_with("timeout: must be at least 60 seconds"),
        "{}",
        body.message
    );
    for violation in v.as_slice() {
        assert!(
            body.message.contains(&violation.to_string()),
            "{} missing from {}",
            violation,
            body.message
        );
    }
}

#[test]
fn messages_help_the_user() {
    let msg = |r: Value| validate(r, &policy()).unwrap_err().to_string();
    assert!(
        msg(request(json!({"resourceLimits": {"memory": "512m"}})))
            .contains("did you mean \"512Mi\"")
    );
    assert!(
        msg(with_volumes(vec![volume(
            json!({"mountPath": "/workspace/"})
        )]))
        .contains("did you mean \"/workspace\"")
    );
    assert!(
        msg(with_volumes(vec![volume(host("/etc"))]))
            .contains("storage.allowed_host_paths: /data/opensandbox, /srv/shared")
    );
    let disabled = StoragePolicy {
        allowed_host_roots: vec![],
        ..policy()
    };
    let m = validate(
        with_volumes(vec![volume(host("/data/opensandbox"))]),
        &disabled,
    )
    .unwrap_err()
    .to_string();
    assert!(m.contains("storage.allowed_host_paths is empty"), "{m}");
    // A credential never appears in a message, even when it is what is wrong.
    let m = msg(with_volumes(vec![volume(ossfs(
        json!({"accessKeySecret": "TOPSECRET\n"}),
    ))]));
    assert!(!m.contains("TOPSECRET"), "{m}");
    // Control characters are shown escaped, so a message stays one line.
    let m = msg(with_volumes(vec![volume(json!({"subPath": "a\nb"}))]));
    assert!(!m.contains('\n') && m.contains("\\n"), "{m:?}");
}

/// The codes every table, runtime and helper test produces, against the full list: each code
/// is either produced by a core test or named here as produced outside core.
#[test]
fn every_code_core_can_produce_has_a_test() {
    let produced_by_tables: Vec<ErrorCode> = tables().iter().map(|(c, _)| *c).collect();
    // Produced in core by other tests: capabilities_and_checks.rs (UnsupportedBackend,
    // StagingUnavailable, InvalidExpiration, InvalidPort) and in_memory_runtime.rs (the runtime codes).
    let produced_elsewhere_in_core = [
        VolumeUnsupportedBackend,
        VolumeStagingUnavailable,
        SandboxInvalidExpiration,
        SandboxInvalidPort,
        SandboxNotFound,
        SandboxInvalidState,
        SandboxImageNotFound,
        SandboxEndpointNotAvailable,
        VolumePvcNotFound,
        RuntimeUnavailable,
        SandboxConflict,
    ];
    // Produced only by a transport, a real engine or a cluster: tested in those crates.
    let outside_core = [
        MissingApiKey,
        InvalidApiKey,
        GeneralInvalidBody,
        GeneralInvalidQuery,
        GeneralInvalidPathParameter,
        GeneralUnsupportedMediaType,
        GeneralPayloadTooLarge,
        GeneralNotFound,
        GeneralMethodNotAllowed,
        GeneralInternalError,
        GeneralDeadlineExceeded,
        KubernetesPodIpNotAvailable,
        // A Kubernetes create past its start deadline (backend-k8s/tests/k8s_cluster.rs).
        SandboxStartTimeout,
        // A claim stuck Terminating (backend-k8s/tests/k8s_objects.rs).
        VolumePvcBeingDeleted,
        SnapshotNotImplemented,
        // The server proxy and its signed routes (api/tests/proxy.rs).
        SandboxEndpointUnreachable,
        SandboxEndpointTimeout,
        SandboxProxyLimitReached,
        SandboxRouteTokenExpired,
        SandboxRouteTokenInvalid,
        VolumeSubPathSymlink,
        VolumeUnsupportedFileType,
        VolumePvcSubPathUnsupportedDriver,
        VolumeOssfsMountFailed,
        // The Docker engine's refusals (backend-docker/tests/docker_engine_errors.rs).
        VolumeNfsMountFailed,
        SandboxUnsatisfiableResourceLimits,
        SandboxPortAlreadyAllocated,
        // The injected agent's failures (backend-docker/tests/docker_execd.rs).
        ExecdImageNotFound,
        ExecdFilesMissing,
        ExecdUploadFailed,
    ];
    let mut classified: Vec<ErrorCode> = produced_by_tables
        .iter()
        .chain(&produced_elsewhere_in_core)
        .chain(&outside_core)
        .copied()
        .collect();
    classified.sort();
    let mut all = ErrorCode::ALL.to_vec();
    all.sort();
    assert_eq!(
        classified, all,
        "every code must be classified exactly once"
    );
}

/// Kubernetes-form requests right next to a rule that must pass.
#[test]
fn kubernetes_form_near_misses_are_accepted() {
    let long = "v".repeat(63);
    let accepted = [
        (
            "claim mounted once",
            k8s(
                vec![k8s_claim("work", json!({}))],
                vec![mount("work", "/workspace", json!({}))],
            ),
        ),
        (
            "claim mounted three times",
            k8s(
                vec![k8s_claim("work", json!({}))],
                vec![
                    mount("work", "/workspace", json!({"subPath": "uid-1/s-1"})),
                    mount("work", "/cache", json!({"subPath": "uid-1/cache"})),
                    mount("work", "/all", json!({"readOnly": true})),
                ],
            ),
        ),
        (
            "hostPath without type, empty type, DirectoryOrCreate",
            k8s(
                vec![
                    json!({"name": "a", "hostPath": {"path": "/data/opensandbox/a"}}),
                    json!({"name": "b", "hostPath": {"path": "/data/opensandbox/b", "type": ""}}),
                    json!({"name": "c", "hostPath": {"path": "/srv/shared", "type": "DirectoryOrCreate"}}),
                ],
                vec![
                    mount("a", "/a", json!({})),
                    mount("b", "/b", json!({})),
                    mount("c", "/c", json!({})),
                ],
            ),
        ),
        (
            "nfs with readOnly and Berth's options",
            k8s(
                vec![
                    json!({"name": "n", "nfs": {"server": "fd00::1", "path": "/e", "readOnly": true, "options": ["vers=4.1"]}}),
                ],
                vec![mount("n", "/n", json!({}))],
            ),
        ),
        (
            "claim readOnly false, mount readOnly false, empty subPath",
            k8s(
                vec![k8s_claim(
                    "work",
                    json!({"persistentVolumeClaim": {"readOnly": false}}),
                )],
                vec![mount(
                    "work",
                    "/workspace",
                    json!({"readOnly": false, "subPath": ""}),
                )],
            ),
        ),
        (
            "readOnly false on a kubernetes volume changes nothing",
            k8s(
                vec![k8s_claim("work", json!({"readOnly": false}))],
                vec![mount("work", "/workspace", json!({}))],
            ),
        ),
        (
            "63-character name mounted twice",
            k8s(
                vec![k8s_claim(&long, json!({}))],
                vec![mount(&long, "/a", json!({})), mount(&long, "/b", json!({}))],
            ),
        ),
        (
            "a volume named like a derived name, with no second mount to clash",
            k8s(
                vec![k8s_claim("work", json!({})), k8s_claim("work-2", json!({}))],
                vec![
                    mount("work", "/a", json!({})),
                    mount("work-2", "/b", json!({})),
                ],
            ),
        ),
        (
            "64 mounts of one volume",
            k8s(
                vec![k8s_claim("work", json!({}))],
                (0..64)
                    .map(|i| mount("work", &format!("/m{i}"), json!({})))
                    .collect(),
            ),
        ),
        (
            "empty mounts beside Berth's form",
            request(json!({"volumes": [volume(json!({}))], "mounts": []})),
        ),
        ("empty mounts alone", request(json!({"mounts": []}))),
    ];
    let mut failures = Vec::new();
    for (what, request) in accepted {
        if let Err(v) = validate(request, &policy()) {
            failures.push(format!("{what}: {v}"));
        }
    }
    assert!(failures.is_empty(), "refused:\n{}", failures.join("\n"));
}

/// Each mount is one volume of the model: named by the documented rule, read-only when the mount
/// or the source says so, and a claim is a reference that is never created.
#[test]
fn kubernetes_mounts_become_model_volumes() {
    let long = "v".repeat(63);
    let spec = validate(
        k8s(
            vec![
                k8s_claim("work", json!({})),
                k8s_claim(
                    "ro",
                    json!({"persistentVolumeClaim": {"claimName": "shared", "readOnly": true}}),
                ),
                json!({"name": "n", "nfs": {"server": "nas", "path": "/e", "readOnly": true}}),
                k8s_claim(&long, json!({})),
            ],
            vec![
                mount("work", "/w1", json!({})),
                mount("ro", "/r1", json!({})),
                mount("work", "/w2", json!({"readOnly": true, "subPath": "a"})),
                mount("ro", "/r2", json!({"readOnly": false})),
                mount("n", "/n", json!({})),
                mount("work", "/w3", json!({})),
                mount(&long, "/l1", json!({})),
                mount(&long, "/l2", json!({})),
            ],
        ),
        &policy(),
    )
    .unwrap();
    let got: Vec<(&str, &str, Option<&str>, bool)> = spec
        .volumes
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.mount_path.as_str(),
                v.sub_path.as_ref().map(|s| s.as_str()),
                v.read_only,
            )
        })
        .collect();
    let long_2 = format!("{}-2", "v".repeat(61));
    assert_eq!(
        got,
        [
            ("work", "/w1", None, false),
            ("ro", "/r1", None, true),
            ("work-2", "/w2", Some("a"), true),
            ("ro-2", "/r2", None, true),
            ("n", "/n", None, true),
            ("work-3", "/w3", None, false),
            (long.as_str(), "/l1", None, false),
            (long_2.as_str(), "/l2", None, false),
        ]
    );
    for volume in &spec.volumes {
        if let berth_core::model::VolumeSource::Pvc(p) = &volume.source {
            assert!(
                !p.create_if_not_exists && !p.delete_on_sandbox_termination,
                "{p:?}"
            );
        }
    }
}

/// A mixing refusal names the field of each form, so the user sees what clashes with what.
#[test]
fn mixing_the_forms_names_both() {
    let msg = |r: Value| validate(r, &policy()).unwrap_err().to_string();
    let m = msg(k8s(
        vec![volume(json!({}))],
        vec![mount("work", "/other", json!({}))],
    ));
    assert!(
        m.starts_with("volumes[0].mountPath: ")
            && m.contains("mountPath, pvc")
            && m.contains("(mounts)"),
        "{m}"
    );
    let m = msg(with_volumes(vec![
        volume(json!({})),
        json!({"name": "data", "hostPath": {"path": "/data/opensandbox"}}),
    ]));
    assert!(
        m.starts_with("volumes[0].mountPath: ") && m.contains("(volumes[1].hostPath)"),
        "{m}"
    );
    let m = msg(k8s(
        vec![k8s_claim("work", json!({"pvc": {"claimName": "x2"}}))],
        vec![mount("work", "/workspace", json!({}))],
    ));
    assert!(
        m.starts_with("volumes[0].pvc: ") && m.contains("(volumes[0].persistentVolumeClaim)"),
        "{m}"
    );
    let m = msg(k8s(
        vec![k8s_claim("work", json!({}))],
        vec![
            mount("work", "/workspace", json!({})),
            mount("cache", "/cache", json!({})),
        ],
    ));
    assert!(
        m.contains("\"cache\"") && m.contains("(volumes: \"work\")"),
        "{m}"
    );
    let m = msg(k8s(
        vec![k8s_claim("work", json!({})), k8s_claim("work-2", json!({}))],
        vec![
            mount("work", "/a", json!({})),
            mount("work-2", "/b", json!({})),
            mount("work", "/c", json!({})),
        ],
    ));
    assert!(
        m.contains("\"work-2\", which volumes[1] already has"),
        "{m}"
    );
}

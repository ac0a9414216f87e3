//! The compact `--volume` syntax: parsing every key, every error, rendering, names, credentials,
//! the wire form, and agreement with the server's validation.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use berth_cli::volume_spec::{
    AccessKeyId, HostSpec, NfsSpec, OssfsSpec, PvcSpec, SecretRef, SecretSource, VolumeBackend,
    VolumeSpec, VolumeSpecError, assign_names, derive_name,
};
use berth_core::model::{HostPath, SandboxSpec, VolumeBackendKind};
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use proptest::prelude::*;
use serde_json::json;

const PVC_EXAMPLE: &str = "type=pvc,claim=sessions,target=/workspace,subpath=uid-1/session-7";
const HOST_EXAMPLE: &str = "type=host,source=/data/skills,target=/skills,readonly";
const NFS_EXAMPLE: &str = "type=nfs,server=nfs.example,path=/export,target=/mnt/shared";
const OSSFS_EXAMPLE: &str = "type=ossfs,bucket=b,endpoint=oss-cn-hangzhou.aliyuncs.com,target=/mnt/oss,access-key-id=AKID,secret-env=OSS_SECRET";

/// A [`SecretSource`] with a fixed environment and files.
#[derive(Default)]
struct FakeSecrets {
    env: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
    non_unicode: Vec<String>,
}

impl FakeSecrets {
    fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    fn with_file(mut self, path: &str, content: &str) -> Self {
        self.files.insert(path.to_owned(), content.to_owned());
        self
    }
}

impl SecretSource for FakeSecrets {
    fn env_var(&self, name: &str) -> Result<String, std::env::VarError> {
        if self.non_unicode.iter().any(|n| n == name) {
            return Err(std::env::VarError::NotUnicode("\u{fffd}".into()));
        }
        self.env
            .get(name)
            .cloned()
            .ok_or(std::env::VarError::NotPresent)
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path.to_str().unwrap())
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
}

fn parse(s: &str) -> VolumeSpec {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn error(s: &str) -> VolumeSpecError {
    match s.parse::<VolumeSpec>() {
        Ok(spec) => panic!("{s:?} should be refused, parsed as {spec:?}"),
        Err(e) => e,
    }
}

fn pvc(spec: &VolumeSpec) -> &PvcSpec {
    match &spec.backend {
        VolumeBackend::Pvc(p) => p,
        other => panic!("not pvc: {other:?}"),
    }
}

fn nfs(spec: &VolumeSpec) -> &NfsSpec {
    match &spec.backend {
        VolumeBackend::Nfs(n) => n,
        other => panic!("not nfs: {other:?}"),
    }
}

fn ossfs(spec: &VolumeSpec) -> &OssfsSpec {
    match &spec.backend {
        VolumeBackend::Ossfs(o) => o,
        other => panic!("not ossfs: {other:?}"),
    }
}

fn no_secrets() -> FakeSecrets {
    FakeSecrets::default()
}

// ---------------------------------------------------------------------------------------------
// The four examples, per backend.

#[test]
fn the_pvc_example_parses() {
    let spec = parse(PVC_EXAMPLE);
    assert_eq!(
        spec,
        VolumeSpec {
            name: None,
            target: "/workspace".into(),
            sub_path: Some("uid-1/session-7".into()),
            read_only: false,
            backend: VolumeBackend::Pvc(PvcSpec {
                claim: "sessions".into(),
                create: true,
                delete_on_termination: false,
                storage_class: None,
                size: None,
                access_modes: vec![],
            }),
        }
    );
    let volume = spec.to_wire(&no_secrets()).unwrap();
    assert_eq!(
        serde_json::to_value(&volume).unwrap(),
        json!({
            "name": "workspace",
            "pvc": {
                "claimName": "sessions",
                "createIfNotExists": true,
                "deleteOnSandboxTermination": false
            },
            "mountPath": "/workspace",
            "subPath": "uid-1/session-7"
        })
    );
}

#[test]
fn the_host_example_parses() {
    let spec = parse(HOST_EXAMPLE);
    assert_eq!(
        spec,
        VolumeSpec {
            name: None,
            target: "/skills".into(),
            sub_path: None,
            read_only: true,
            backend: VolumeBackend::Host(HostSpec {
                source: "/data/skills".into()
            }),
        }
    );
    assert_eq!(
        serde_json::to_value(spec.to_wire(&no_secrets()).unwrap()).unwrap(),
        json!({
            "name": "skills",
            "host": {"path": "/data/skills"},
            "mountPath": "/skills",
            "readOnly": true
        })
    );
}

#[test]
fn the_nfs_example_parses() {
    let spec = parse(NFS_EXAMPLE);
    assert_eq!(
        spec.backend,
        VolumeBackend::Nfs(NfsSpec {
            server: "nfs.example".into(),
            path: "/export".into(),
            options: vec![],
        })
    );
    assert_eq!(spec.target, "/mnt/shared");
    assert_eq!(
        serde_json::to_value(spec.to_wire(&no_secrets()).unwrap()).unwrap(),
        json!({
            "name": "mnt-shared",
            "nfs": {"server": "nfs.example", "path": "/export"},
            "mountPath": "/mnt/shared"
        })
    );
}

#[test]
fn the_ossfs_example_parses_and_resolves_its_secret_from_the_environment() {
    let spec = parse(OSSFS_EXAMPLE);
    assert_eq!(
        spec.backend,
        VolumeBackend::Ossfs(OssfsSpec {
            bucket: "b".into(),
            endpoint: "oss-cn-hangzhou.aliyuncs.com".into(),
            version: None,
            options: vec![],
            access_key_id: AccessKeyId::Value("AKID".into()),
            secret: SecretRef::Env("OSS_SECRET".into()),
        })
    );
    let secrets = no_secrets().with_env("OSS_SECRET", "s3cr3t");
    assert_eq!(
        serde_json::to_value(spec.to_wire(&secrets).unwrap()).unwrap(),
        json!({
            "name": "mnt-oss",
            "ossfs": {
                "bucket": "b",
                "endpoint": "oss-cn-hangzhou.aliyuncs.com",
                "accessKeyId": "AKID",
                "accessKeySecret": "s3cr3t"
            },
            "mountPath": "/mnt/oss"
        })
    );
}

#[test]
fn the_examples_render_as_written() {
    for example in [PVC_EXAMPLE, HOST_EXAMPLE, NFS_EXAMPLE, OSSFS_EXAMPLE] {
        assert_eq!(parse(example).to_string(), example);
    }
}

// ---------------------------------------------------------------------------------------------
// Each key and option.

#[test]
fn target_aliases() {
    for key in ["target", "dst", "destination", "TARGET", "Dst"] {
        let spec = parse(&format!("type=host,source=/a,{key}=/b"));
        assert_eq!(spec.target, "/b", "{key}");
    }
}

#[test]
fn subpath_aliases() {
    for key in ["subpath", "sub-path", "volume-subpath"] {
        let spec = parse(&format!("claim=data,target=/b,{key}=x/y"));
        assert_eq!(spec.sub_path.as_deref(), Some("x/y"), "{key}");
    }
}

#[test]
fn source_alias() {
    let spec = parse("src=/srv,target=/b");
    assert_eq!(
        spec.backend,
        VolumeBackend::Host(HostSpec {
            source: "/srv".into()
        })
    );
}

#[test]
fn readonly_spellings() {
    for (field, expected) in [
        ("readonly", true),
        ("ro", true),
        ("readonly=true", true),
        ("ro=1", true),
        ("READONLY=TRUE", true),
        ("readonly=false", false),
        ("ro=0", false),
        ("readonly=False", false),
    ] {
        let spec = parse(&format!("type=host,source=/a,target=/b,{field}"));
        assert_eq!(spec.read_only, expected, "{field}");
    }
    assert!(!parse("type=host,source=/a,target=/b").read_only);
}

#[test]
fn name_is_kept_as_given() {
    let spec = parse("type=host,name=Skills_1,source=/a,target=/b");
    assert_eq!(spec.name.as_deref(), Some("Skills_1"));
    assert_eq!(spec.to_wire(&no_secrets()).unwrap().name, "Skills_1");
}

#[test]
fn pvc_keys() {
    let spec = parse(
        "type=pvc,claim=data,target=/d,create=false,delete-on-termination,storage-class=fast-ssd,size=10Gi,access-mode=ReadWriteOnce,access-mode=ReadOnlyMany",
    );
    assert_eq!(
        pvc(&spec),
        &PvcSpec {
            claim: "data".into(),
            create: false,
            delete_on_termination: true,
            storage_class: Some("fast-ssd".into()),
            size: Some("10Gi".into()),
            access_modes: vec!["ReadWriteOnce".into(), "ReadOnlyMany".into()],
        }
    );
    let wire = spec.to_wire(&no_secrets()).unwrap();
    assert_eq!(
        serde_json::to_value(wire.pvc).unwrap(),
        json!({
            "claimName": "data",
            "createIfNotExists": false,
            "deleteOnSandboxTermination": true,
            "storageClass": "fast-ssd",
            "storage": "10Gi",
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]
        })
    );
}

#[test]
fn pvc_flags_take_booleans() {
    assert!(pvc(&parse("claim=data,target=/d,create")).create);
    assert!(pvc(&parse("claim=data,target=/d,create=1")).create);
    assert!(!pvc(&parse("claim=data,target=/d,create=0")).create);
    assert!(!pvc(&parse("claim=data,target=/d,delete-on-termination=false")).delete_on_termination);
    assert!(pvc(&parse("claim=data,target=/d,delete-on-termination=TRUE")).delete_on_termination);
}

#[test]
fn nfs_keys_and_ipv6_servers() {
    for server in ["fd00::1", "[fd00::1]", "10.0.0.1", "nas-1.example"] {
        let spec = parse(&format!(
            "server={server},path=/exports/a:b,target=/mnt/n,nfs-opt=vers=4.1,nfs-opt=hard"
        ));
        assert_eq!(
            nfs(&spec),
            &NfsSpec {
                server: server.into(),
                path: "/exports/a:b".into(),
                options: vec!["vers=4.1".into(), "hard".into()],
            }
        );
        let wire = spec.to_wire(&no_secrets()).unwrap();
        let backend = wire.nfs.unwrap();
        assert_eq!(backend.server, server);
        assert_eq!(
            backend.options,
            Some(vec!["vers=4.1".to_owned(), "hard".to_owned()])
        );
        assert!(!backend.read_only, "readonly goes on the volume");
    }
}

#[test]
fn nfs_readonly_sets_the_volumes_flag() {
    let wire = parse("server=s,path=/e,target=/m,ro")
        .to_wire(&no_secrets())
        .unwrap();
    assert!(wire.read_only);
    assert!(!wire.nfs.unwrap().read_only);
}

#[test]
fn ossfs_keys() {
    let spec = parse(
        "bucket=my-bucket,endpoint=oss.example,version=1.0,ossfs-opt=kernel_cache,ossfs-opt=umask=022,access-key-id-env=OSS_ID,secret-file=/run/secrets/oss,target=/o",
    );
    assert_eq!(
        ossfs(&spec),
        &OssfsSpec {
            bucket: "my-bucket".into(),
            endpoint: "oss.example".into(),
            version: Some("1.0".into()),
            options: vec!["kernel_cache".into(), "umask=022".into()],
            access_key_id: AccessKeyId::Env("OSS_ID".into()),
            secret: SecretRef::File("/run/secrets/oss".into()),
        }
    );
    let secrets = no_secrets()
        .with_env("OSS_ID", "LTAI-id")
        .with_file("/run/secrets/oss", "file-secret\n");
    let wire = spec.to_wire(&secrets).unwrap().ossfs.unwrap();
    assert_eq!(wire.access_key_id, "LTAI-id");
    assert_eq!(
        wire.access_key_secret, "file-secret",
        "trailing newline trimmed"
    );
    assert_eq!(wire.version.as_deref(), Some("1.0"));
    assert_eq!(
        wire.options,
        Some(vec!["kernel_cache".to_owned(), "umask=022".to_owned()])
    );
}

#[test]
fn a_secret_file_loses_one_line_ending_only() {
    let spec = parse("bucket=bkt,endpoint=e,access-key-id=id,secret-file=/s,target=/o");
    for (content, expected) in [("abc\r\n", "abc"), ("abc", "abc"), ("abc\n\n", "abc\n")] {
        let secrets = no_secrets().with_file("/s", content);
        let wire = spec.to_wire(&secrets).unwrap().ossfs.unwrap();
        assert_eq!(wire.access_key_secret, expected, "{content:?}");
    }
}

#[test]
fn type_is_implied_by_the_one_source_key() {
    assert_eq!(parse("claim=c1,target=/a").kind(), VolumeBackendKind::Pvc);
    assert_eq!(parse("source=/x,target=/a").kind(), VolumeBackendKind::Host);
    assert_eq!(
        parse("server=s,path=/e,target=/a").kind(),
        VolumeBackendKind::Nfs
    );
    assert_eq!(
        parse("bucket=bkt,endpoint=e,access-key-id=i,secret-env=S,target=/a").kind(),
        VolumeBackendKind::Ossfs
    );
    assert_eq!(
        parse("type=PVC,claim=c1,target=/a").kind(),
        VolumeBackendKind::Pvc
    );
}

#[test]
fn values_keep_equals_colons_spaces_and_quoted_commas() {
    let spec = parse(r#"type=host,"source=/srv/a,b",target=/mnt/x:y=z w,"name=say ""hi""""#);
    assert_eq!(
        spec.backend,
        VolumeBackend::Host(HostSpec {
            source: "/srv/a,b".into()
        })
    );
    assert_eq!(spec.target, "/mnt/x:y=z w");
    assert_eq!(spec.name.as_deref(), Some(r#"say "hi""#));
    assert_eq!(
        spec.to_string(),
        r#"type=host,"name=say ""hi""","source=/srv/a,b",target=/mnt/x:y=z w"#
    );
}

#[test]
fn blanks_around_keys_are_ignored_but_values_are_kept() {
    let spec = parse("type=host, source=/a ,  target=/b");
    assert_eq!(spec.target, "/b");
    assert_eq!(
        spec.backend,
        VolumeBackend::Host(HostSpec {
            source: "/a ".into()
        })
    );
}

#[test]
fn canonical_order_puts_type_first_and_drops_defaults() {
    let spec = parse(
        "access-mode=ReadWriteOnce,size=1Gi,ro,target=/d,create=true,delete-on-termination=false,claim=data,name=d,sub-path=x",
    );
    assert_eq!(
        spec.to_string(),
        "type=pvc,name=d,claim=data,target=/d,subpath=x,readonly,size=1Gi,access-mode=ReadWriteOnce"
    );
    let spec = parse(
        "secret-file=/f,access-key-id-env=I,ossfs-opt=noxattr,version=2.0,target=/o,endpoint=e,bucket=bkt",
    );
    assert_eq!(
        spec.to_string(),
        "type=ossfs,bucket=bkt,endpoint=e,target=/o,version=2.0,ossfs-opt=noxattr,access-key-id-env=I,secret-file=/f"
    );
    assert_eq!(
        parse("claim=data,target=/d,create=false,delete-on-termination").to_string(),
        "type=pvc,claim=data,target=/d,create=false,delete-on-termination"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors: each names the key and says what to write.

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let e = error("type=host,source=/a,targt=/b");
    assert!(
        matches!(&e, VolumeSpecError::UnknownKey { key, suggestion: Some("target") } if key == "targt"),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.starts_with(
            r#"unknown key "targt" (did you mean "target"?); expected one of: type, name, target, "#
        ),
        "{message}"
    );
    let e = error("type=host,source=/a,target=/b,bind-propagation=rshared");
    assert!(
        matches!(&e, VolumeSpecError::UnknownKey { key, suggestion: None } if key == "bind-propagation")
    );
}

#[test]
fn secrets_on_the_command_line_are_refused_without_echoing_them() {
    for key in [
        "access-key-secret",
        "ACCESS_KEY_SECRET",
        "accessKeySecret",
        "secret",
        "password",
        "secret-value",
    ] {
        let spec = format!("bucket=bkt,endpoint=e,access-key-id=id,{key}=hunter2,target=/o");
        let e = error(&spec);
        assert!(
            matches!(&e, VolumeSpecError::SecretOnCommandLine { key: k } if *k == key.to_ascii_lowercase()),
            "{key}: {e:?}"
        );
        let message = e.to_string();
        assert!(message.contains("secret-env=VAR"), "{message}");
        assert!(message.contains("secret-file=PATH"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

#[test]
fn duplicate_keys_are_refused_also_through_aliases() {
    let e = error("type=host,source=/a,target=/b,target=/c");
    assert!(
        matches!(&e, VolumeSpecError::DuplicateKey { key, first } if key == "target" && first == "target")
    );
    assert_eq!(
        e.to_string(),
        r#"key "target" is given twice; give it once"#
    );
    let e = error("type=host,source=/a,target=/b,dst=/c");
    assert_eq!(
        e.to_string(),
        r#"key "dst" is given twice (first as "target"); give it once"#
    );
    let e = error("type=host,source=/a,target=/b,ro,readonly=false");
    assert!(matches!(&e, VolumeSpecError::DuplicateKey { key, .. } if key == "readonly"));
    let e = error("type=pvc,type=pvc,claim=c1,target=/b");
    assert!(matches!(&e, VolumeSpecError::DuplicateKey { key, .. } if key == "type"));
}

#[test]
fn exclusive_credential_keys_conflict() {
    let e =
        error("bucket=bkt,endpoint=e,access-key-id=i,access-key-id-env=I,secret-env=S,target=/o");
    assert_eq!(
        e.to_string(),
        r#"keys "access-key-id" and "access-key-id-env" exclude each other; give only one"#
    );
    let e = error("bucket=bkt,endpoint=e,access-key-id=i,secret-file=/f,secret-env=S,target=/o");
    assert!(
        matches!(&e, VolumeSpecError::Conflict { first, second } if first == "secret-file" && second == "secret-env")
    );
}

#[test]
fn another_backends_key_is_a_contradiction() {
    let e = error("type=host,source=/a,target=/b,claim=c1");
    assert!(matches!(
        &e,
        VolumeSpecError::WrongBackend { key, key_type: VolumeBackendKind::Pvc, volume_type: VolumeBackendKind::Host } if key == "claim"
    ));
    assert_eq!(
        e.to_string(),
        r#"key "claim" belongs to type=pvc, but this volume is type=host; remove it, or use type=pvc"#
    );
    let e = error("claim=c1,target=/b,nfs-opt=hard");
    assert!(matches!(&e, VolumeSpecError::WrongBackend { key, .. } if key == "nfs-opt"));
    let e = error("type=nfs,server=s,path=/e,target=/m,secret-env=X");
    assert!(matches!(&e, VolumeSpecError::WrongBackend { key, .. } if key == "secret-env"));
}

#[test]
fn the_type_must_be_known_or_implied_once() {
    let e = error("type=volume,claim=c1,target=/b");
    assert_eq!(
        e.to_string(),
        r#"unknown type "volume"; expected one of: pvc, host, nfs, ossfs"#
    );
    assert!(matches!(
        error("target=/b,readonly"),
        VolumeSpecError::MissingType
    ));
    let e = error("claim=c1,source=/a,target=/b");
    assert!(matches!(&e, VolumeSpecError::AmbiguousType { keys } if *keys == ["claim", "source"]));
    assert!(e.to_string().contains(r#""claim", "source""#), "{e}");
}

#[test]
fn required_keys_are_named_with_what_to_write() {
    for (spec, key, example) in [
        ("type=host,source=/a", "target", "target=PATH"),
        ("type=pvc,target=/a", "claim", "claim=NAME"),
        ("type=host,target=/a", "source", "source=PATH"),
        ("type=nfs,path=/e,target=/a", "server", "server=HOST"),
        ("server=s,target=/a", "path", "path=PATH"),
        (
            "type=ossfs,endpoint=e,access-key-id=i,secret-env=S,target=/a",
            "bucket",
            "bucket=NAME",
        ),
        (
            "bucket=bkt,access-key-id=i,secret-env=S,target=/a",
            "endpoint",
            "endpoint=HOST",
        ),
    ] {
        let e = error(spec);
        assert!(
            matches!(&e, VolumeSpecError::MissingKey { key: k, example: x, .. } if *k == key && *x == example),
            "{spec}: {e:?}"
        );
        assert!(
            e.to_string().contains(&format!("missing key {key:?}")),
            "{e}"
        );
    }
}

#[test]
fn values_must_be_present_and_not_blank() {
    let e = error("type=host,source=/a,target");
    assert_eq!(
        e.to_string(),
        r#"key "target" needs a value: write target=PATH"#
    );
    for (spec, key) in [
        ("type=host,source=/a,target=", "target"),
        ("type=host,source=/a,target=  ", "target"),
        ("type=host,source=/a,target=/t,name=", "name"),
        ("type=host,source=/a,target=/t,subpath=", "subpath"),
        ("type=host,source=,target=/t", "source"),
        ("type=,source=/a,target=/t", "type"),
    ] {
        let e = error(spec);
        assert!(
            matches!(&e, VolumeSpecError::EmptyValue { key: k, .. } if k == key),
            "{spec}: {e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("key {key:?} has an empty value: write {key}=")),
            "{e}"
        );
    }
    let e = error("claim=c1,target=/b,access-mode=");
    assert!(matches!(&e, VolumeSpecError::EmptyValue { key, .. } if key == "access-mode"));
}

#[test]
fn flags_take_only_booleans() {
    let e = error("type=host,source=/a,target=/b,readonly=yes");
    assert!(
        matches!(&e, VolumeSpecError::InvalidFlag { key, value } if key == "readonly" && value == "yes")
    );
    assert_eq!(
        e.to_string(),
        r#"key "readonly" is a flag: give it bare (readonly) or as readonly=true, readonly=false, readonly=1 or readonly=0, not readonly="yes""#
    );
    let e = error("claim=c1,target=/b,create=maybe");
    assert!(matches!(&e, VolumeSpecError::InvalidFlag { key, .. } if key == "create"));
}

#[test]
fn malformed_records_are_refused() {
    assert!(matches!(error(""), VolumeSpecError::Empty));
    assert!(matches!(
        error("type=host,source=/a,,target=/b"),
        VolumeSpecError::EmptyField { position: 3 }
    ));
    assert!(matches!(
        error("type=host,source=/a,target=/b,"),
        VolumeSpecError::EmptyField { position: 4 }
    ));
    assert!(matches!(
        error("type=host,source=/a\ntarget=/b"),
        VolumeSpecError::MultipleLines
    ));
    assert!(
        matches!(error("type=host,=/a,target=/b"), VolumeSpecError::NoKey { field } if field == "=/a")
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials.

#[test]
fn missing_or_unusable_credentials_are_named() {
    let by_env =
        parse("bucket=bkt,endpoint=e,access-key-id-env=OSS_ID,secret-env=OSS_SECRET,target=/o");
    let e = by_env
        .to_wire(&no_secrets().with_env("OSS_ID", "id"))
        .unwrap_err();
    assert!(
        matches!(&e, VolumeSpecError::EnvVarMissing { key: "secret-env", var } if var == "OSS_SECRET")
    );
    assert_eq!(
        e.to_string(),
        r#"environment variable "OSS_SECRET" (named by secret-env) is not set; set it, or name another one"#
    );
    let e = by_env
        .to_wire(&no_secrets().with_env("OSS_SECRET", "s"))
        .unwrap_err();
    assert!(
        matches!(&e, VolumeSpecError::EnvVarMissing { key: "access-key-id-env", var } if var == "OSS_ID")
    );
    let e = by_env
        .to_wire(
            &no_secrets()
                .with_env("OSS_ID", "id")
                .with_env("OSS_SECRET", ""),
        )
        .unwrap_err();
    assert!(matches!(
        &e,
        VolumeSpecError::EmptyCredential {
            key: "secret-env",
            ..
        }
    ));
    let mut non_unicode = no_secrets().with_env("OSS_ID", "id");
    non_unicode.non_unicode.push("OSS_SECRET".into());
    let e = by_env.to_wire(&non_unicode).unwrap_err();
    assert!(matches!(
        &e,
        VolumeSpecError::EnvVarNotUnicode {
            key: "secret-env",
            ..
        }
    ));

    let by_file = parse("bucket=bkt,endpoint=e,access-key-id=i,secret-file=/run/oss,target=/o");
    let e = by_file.to_wire(&no_secrets()).unwrap_err();
    assert!(
        matches!(&e, VolumeSpecError::SecretFile { key: "secret-file", path, .. } if path == "/run/oss")
    );
    assert!(
        e.to_string()
            .starts_with(r#"cannot read the file "/run/oss" (named by secret-file): "#)
    );
    let e = by_file
        .to_wire(&no_secrets().with_file("/run/oss", "\n"))
        .unwrap_err();
    assert!(matches!(
        &e,
        VolumeSpecError::EmptyCredential {
            key: "secret-file",
            ..
        }
    ));
}

#[test]
fn the_spec_holds_references_never_secrets() {
    let spec = parse(OSSFS_EXAMPLE);
    let secrets = no_secrets().with_env("OSS_SECRET", "sup3r-s3cret");
    spec.to_wire(&secrets).unwrap();
    assert!(!format!("{spec:?}").contains("sup3r-s3cret"));
    assert!(!spec.to_string().contains("sup3r-s3cret"));
}

#[test]
fn process_secrets_read_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "from-a-file\n").unwrap();
    let spec = parse(&format!(
        "bucket=bkt,endpoint=e,access-key-id=i,\"secret-file={}\",target=/o",
        path.display()
    ));
    let wire = spec
        .to_wire(&berth_cli::volume_spec::ProcessSecrets)
        .unwrap();
    assert_eq!(wire.ossfs.unwrap().access_key_secret, "from-a-file");
}

// ---------------------------------------------------------------------------------------------
// Names.

#[test]
fn names_derive_from_targets() {
    for (target, name) in [
        ("/workspace", "workspace"),
        ("/mnt/my_data", "mnt-my-data"),
        ("/Mnt//Data..v2/", "mnt-data-v2"),
        ("/", "volume"),
        ("/___/", "volume"),
        ("/données", "donn-es"),
        ("/9lives", "9lives"),
    ] {
        assert_eq!(derive_name(target), name, "{target}");
    }
    let long = format!("/{}", "abc/".repeat(40));
    let name = derive_name(&long);
    assert!(name.len() <= 63, "{name}");
    assert!(berth_core::model::is_dns_label(&name), "{name}");
}

#[test]
fn assigned_names_are_unique_and_explicit_ones_untouched() {
    let mut specs: Vec<VolumeSpec> = [
        "type=host,source=/a,target=/data",
        "type=host,source=/b,target=/DATA/",
        "type=host,source=/c,target=/data_",
        "type=host,name=data-2,source=/d,target=/x",
        "type=host,name=keep_Me,source=/e,target=/y",
        "type=host,source=/f,target=/data-3",
    ]
    .iter()
    .map(|s| parse(s))
    .collect();
    assign_names(&mut specs);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        ["data", "data-3", "data-4", "data-2", "keep_Me", "data-3-2"]
    );
    let again = specs.clone();
    assign_names(&mut specs);
    assert_eq!(specs, again, "assigning twice changes nothing");
}

// ---------------------------------------------------------------------------------------------
// From the wire.

fn wire_volume(value: serde_json::Value) -> wire::Volume {
    serde_json::from_value(value).unwrap()
}

#[test]
fn wire_volumes_show_in_compact_form() {
    let volume = wire_volume(json!({
        "name": "workspace",
        "pvc": {"claimName": "sessions"},
        "mountPath": "/workspace",
        "subPath": "uid-1/session-7"
    }));
    assert_eq!(
        VolumeSpec::from_wire(&volume).unwrap().to_string(),
        PVC_EXAMPLE
    );
    let volume = wire_volume(json!({
        "name": "shared",
        "nfs": {"server": "fd00::1", "path": "/export", "readOnly": true, "options": ["hard"]},
        "mountPath": "/mnt/shared",
        "subPath": ""
    }));
    assert_eq!(
        VolumeSpec::from_wire(&volume).unwrap().to_string(),
        "type=nfs,name=shared,server=fd00::1,path=/export,target=/mnt/shared,readonly,nfs-opt=hard"
    );
}

#[test]
fn wire_volumes_without_a_compact_form_are_refused() {
    for (value, reason) in [
        (
            json!({"name": "o", "ossfs": {"bucket": "bkt", "endpoint": "e", "accessKeyId": "i", "accessKeySecret": "s3cr3t"}, "mountPath": "/o"}),
            "ossfs",
        ),
        (
            json!({"name": "k", "persistentVolumeClaim": {"claimName": "c1"}}),
            "Kubernetes form",
        ),
        (json!({"name": "h", "host": {"path": "/a"}}), "no mountPath"),
        (
            json!({"name": "two", "host": {"path": "/a"}, "pvc": {"claimName": "c1"}, "mountPath": "/x"}),
            "exactly one",
        ),
        (
            json!({"name": "e", "host": {"path": " "}, "mountPath": "/x"}),
            "host.path is empty",
        ),
    ] {
        let volume = wire_volume(value);
        let e = VolumeSpec::from_wire(&volume).unwrap_err();
        assert!(
            matches!(&e, VolumeSpecError::FromWire { volume: v, .. } if *v == volume.name),
            "{e:?}"
        );
        let message = e.to_string();
        assert!(message.contains(reason), "{message}");
        assert!(!message.contains("s3cr3t"), "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Agreement with the server's validation.

fn validate(volumes: Vec<wire::Volume>) -> Result<SandboxSpec, berth_core::validate::Violations> {
    let request = json!({
        "image": {"uri": "python:3.11"},
        "entrypoint": ["python", "-m", "http.server"],
        "resourceLimits": {},
        "volumes": volumes,
    });
    let request: wire::CreateSandboxRequest = serde_json::from_value(request).unwrap();
    let policy = StoragePolicy {
        allowed_host_roots: vec![HostPath::new("/").unwrap()],
        max_timeout_seconds: None,
    };
    SandboxSpec::from_request(request, &policy)
}

fn wire_of(specs: &[&str], secrets: &FakeSecrets) -> Vec<wire::Volume> {
    let mut specs: Vec<VolumeSpec> = specs.iter().map(|s| parse(s)).collect();
    assign_names(&mut specs);
    specs.iter().map(|s| s.to_wire(secrets).unwrap()).collect()
}

#[test]
fn the_examples_pass_the_servers_validation() {
    let secrets = no_secrets().with_env("OSS_SECRET", "s3cr3t");
    // The ossfs example's bucket "b" is shorter than OSS allows (3 to 63 characters): the server
    // refuses exactly that, and with a longer bucket all four examples pass.
    let err = validate(wire_of(
        &[PVC_EXAMPLE, HOST_EXAMPLE, NFS_EXAMPLE, OSSFS_EXAMPLE],
        &secrets,
    ))
    .unwrap_err();
    let fields: Vec<&str> = err.as_slice().iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["volumes[3].ossfs.bucket"], "{err}");

    let ossfs = OSSFS_EXAMPLE.replace("bucket=b,", "bucket=my-bucket,");
    let spec = validate(wire_of(
        &[PVC_EXAMPLE, HOST_EXAMPLE, NFS_EXAMPLE, &ossfs],
        &secrets,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = spec.volumes.iter().map(|v| v.name.to_string()).collect();
    assert_eq!(names, ["workspace", "skills", "mnt-shared", "mnt-oss"]);
    assert!(spec.volumes[1].read_only);
}

#[test]
fn every_key_passes_the_servers_validation() {
    let secrets = no_secrets()
        .with_env("OSS_ID", "LTAI5t")
        .with_file("/run/oss", "s3cr3t\n");
    let volumes = wire_of(
        &[
            "claim=data,target=/data,create=false,delete-on-termination,storage-class=fast,size=1Gi,access-mode=ReadWriteOnce,access-mode=ReadOnlyMany,subpath=a/b,ro",
            "server=[fd00::1],path=/export,target=/nfs,nfs-opt=vers=4.1,nfs-opt=hard,readonly",
            "bucket=my-bucket,endpoint=oss.example,version=1.0,ossfs-opt=kernel_cache,access-key-id-env=OSS_ID,secret-file=/run/oss,dst=/oss",
            "src=/srv/x,destination=/data_,sub-path=y",
        ],
        &secrets,
    );
    let spec = validate(volumes).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = spec.volumes.iter().map(|v| v.name.to_string()).collect();
    assert_eq!(names, ["data", "nfs", "oss", "data-2"]);
}

#[test]
fn derived_names_always_pass_the_servers_name_rule() {
    let targets = ["/a/b", "/A/B", "/a_b", "/a-b", "/a.b/", "/é", "/_"];
    let specs: Vec<String> = targets
        .iter()
        .map(|t| format!("source=/srv,target=/x{t}"))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let mut parsed: Vec<VolumeSpec> = specs.iter().map(|s| parse(s)).collect();
    assign_names(&mut parsed);
    // Only the names are under test: give every volume its own mount path.
    let volumes: Vec<wire::Volume> = parsed
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut w = s.to_wire(&no_secrets()).unwrap();
            w.mount_path = Some(format!("/m{i}"));
            w
        })
        .collect();
    validate(volumes).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------------
// Properties.

/// A value the syntax accepts: not blank; commas, quotes, `=`, `:`, brackets, spaces, line
/// breaks and non-ASCII included.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/._-]{1,12}",
        "[ -~]{1,16}",
        "[ ,\"=:\\[\\]a-z\r\n\té]{1,10}",
        Just("fd00::1".to_owned()),
        Just("[fd00::1]".to_owned()),
        Just("/mnt/a:b".to_owned()),
    ]
    .prop_filter("blank values are refused", |v| !v.trim().is_empty())
}

fn values() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(value(), 0..3)
}

fn backend() -> impl Strategy<Value = VolumeBackend> {
    let pvc = (
        value(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(value()),
        prop::option::of(value()),
        values(),
    )
        .prop_map(|(claim, create, delete, class, size, modes)| {
            VolumeBackend::Pvc(PvcSpec {
                claim,
                create,
                delete_on_termination: delete,
                storage_class: class,
                size,
                access_modes: modes,
            })
        });
    let host = value().prop_map(|source| VolumeBackend::Host(HostSpec { source }));
    let nfs = (value(), value(), values()).prop_map(|(server, path, options)| {
        VolumeBackend::Nfs(NfsSpec {
            server,
            path,
            options,
        })
    });
    let ossfs = (
        value(),
        value(),
        prop::option::of(value()),
        values(),
        prop_oneof![
            value().prop_map(AccessKeyId::Value),
            value().prop_map(AccessKeyId::Env)
        ],
        prop_oneof![
            value().prop_map(SecretRef::Env),
            value().prop_map(SecretRef::File)
        ],
    )
        .prop_map(|(bucket, endpoint, version, options, id, secret)| {
            VolumeBackend::Ossfs(OssfsSpec {
                bucket,
                endpoint,
                version,
                options,
                access_key_id: id,
                secret,
            })
        });
    prop_oneof![pvc, host, nfs, ossfs]
}

fn spec() -> impl Strategy<Value = VolumeSpec> {
    (
        prop::option::of(value()),
        value(),
        prop::option::of(value()),
        any::<bool>(),
        backend(),
    )
        .prop_map(|(name, target, sub_path, read_only, backend)| VolumeSpec {
            name,
            target,
            sub_path,
            read_only,
            backend,
        })
}

/// Choices read from a tape of random numbers, cycling.
struct Tape(Vec<u32>, usize);

impl Tape {
    fn pick(&mut self, n: usize) -> usize {
        let v = self.0[self.1 % self.0.len()];
        self.1 += 1;
        v as usize % n
    }

    fn coin(&mut self) -> bool {
        self.pick(2) == 0
    }

    fn one<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.pick(options.len())]
    }
}

/// Another way of writing `spec` that must parse to it: keys in any order (repeated keys keep
/// their relative order), any alias, any case, blanks before keys, flags in any spelling,
/// defaults spelled out or not, `type` left out, fields quoted needlessly.
fn noisy(spec: &VolumeSpec, tape: &mut Tape) -> String {
    // (group, key spellings, value); a group's fields keep their order.
    let mut fields: Vec<(&str, Vec<&str>, Option<String>)> = Vec::new();
    let text = |group: &'static str, spellings: &[&'static str], v: &str| {
        (group, spellings.to_vec(), Some(v.to_owned()))
    };
    let kind = spec.kind().as_str();
    if tape.coin() {
        let spelled = if tape.coin() {
            kind.to_ascii_uppercase()
        } else {
            kind.to_owned()
        };
        fields.push(("type", vec!["type"], Some(spelled)));
    }
    if let Some(name) = &spec.name {
        fields.push(text("name", &["name"], name));
    }
    fields.push(text(
        "target",
        &["target", "dst", "destination"],
        &spec.target,
    ));
    if let Some(sub_path) = &spec.sub_path {
        fields.push(text(
            "subpath",
            &["subpath", "sub-path", "volume-subpath"],
            sub_path,
        ));
    }
    let flag = |tape: &mut Tape,
                group: &'static str,
                spellings: &[&'static str],
                on: bool,
                default: bool| {
        let value = if on {
            tape.one(&["", "=true", "=TRUE", "=1", "=True"])
        } else {
            tape.one(&["=false", "=0", "=FALSE"])
        };
        if on != default || tape.coin() {
            let value = value.strip_prefix('=').map(str::to_owned);
            Some((group, spellings.to_vec(), value))
        } else {
            None
        }
    };
    fields.extend(flag(
        tape,
        "readonly",
        &["readonly", "ro"],
        spec.read_only,
        false,
    ));
    match &spec.backend {
        VolumeBackend::Pvc(p) => {
            fields.push(text("claim", &["claim"], &p.claim));
            fields.extend(flag(tape, "create", &["create"], p.create, true));
            fields.extend(flag(
                tape,
                "delete",
                &["delete-on-termination"],
                p.delete_on_termination,
                false,
            ));
            if let Some(c) = &p.storage_class {
                fields.push(text("class", &["storage-class"], c));
            }
            if let Some(s) = &p.size {
                fields.push(text("size", &["size"], s));
            }
            for m in &p.access_modes {
                fields.push(text("mode", &["access-mode"], m));
            }
        }
        VolumeBackend::Host(h) => fields.push(text("source", &["source", "src"], &h.source)),
        VolumeBackend::Nfs(n) => {
            fields.push(text("server", &["server"], &n.server));
            fields.push(text("path", &["path"], &n.path));
            for o in &n.options {
                fields.push(text("opt", &["nfs-opt"], o));
            }
        }
        VolumeBackend::Ossfs(o) => {
            fields.push(text("bucket", &["bucket"], &o.bucket));
            fields.push(text("endpoint", &["endpoint"], &o.endpoint));
            if let Some(v) = &o.version {
                fields.push(text("version", &["version"], v));
            }
            for opt in &o.options {
                fields.push(text("opt", &["ossfs-opt"], opt));
            }
            fields.push(match &o.access_key_id {
                AccessKeyId::Value(id) => text("id", &["access-key-id"], id),
                AccessKeyId::Env(var) => text("id", &["access-key-id-env"], var),
            });
            fields.push(match &o.secret {
                SecretRef::Env(var) => text("secret", &["secret-env"], var),
                SecretRef::File(path) => text("secret", &["secret-file"], path),
            });
        }
    }
    // Shuffle, then put each group's fields back in their order in the slots the group got.
    let mut order: Vec<usize> = (0..fields.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, tape.pick(i + 1));
    }
    let mut slots: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (slot, &i) in order.iter().enumerate() {
        slots.entry(fields[i].0).or_default().push(slot);
    }
    let mut placed: Vec<Option<usize>> = vec![None; fields.len()];
    let mut next: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, field) in fields.iter().enumerate() {
        let n = next.entry(field.0).or_default();
        placed[slots[field.0][*n]] = Some(i);
        *n += 1;
    }
    let written: Vec<String> = placed
        .into_iter()
        .map(|i| {
            let (_, spellings, value) = &fields[i.unwrap()];
            let mut key = tape.one(spellings).to_owned();
            if tape.pick(4) == 0 {
                key = key.to_ascii_uppercase();
            }
            let pad = tape.one(&["", " ", "  "]);
            let field = match value {
                Some(v) => format!("{pad}{key}={v}"),
                None => format!("{pad}{key}"),
            };
            csv_field(field, tape.pick(4) == 0)
        })
        .collect();
    written.join(",")
}

/// Fields built from the syntax's own words (and a few others), to find strings the parser
/// accepts that were not written by `Display`.
fn field() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "type",
        "name",
        "target",
        "dst",
        "subpath",
        "readonly",
        "ro",
        "claim",
        "create",
        "delete-on-termination",
        "storage-class",
        "size",
        "access-mode",
        "source",
        "src",
        "server",
        "path",
        "nfs-opt",
        "bucket",
        "endpoint",
        "version",
        "ossfs-opt",
        "access-key-id",
        "access-key-id-env",
        "secret-env",
        "secret-file",
        "TYPE",
        " target",
        "bogus",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec!["pvc", "host", "nfs", "ossfs", "true", "0", ""])
            .prop_map(str::to_owned),
        value(),
    ];
    (key, prop::option::of(value), any::<bool>()).prop_map(|(key, value, quote)| {
        let field = match value {
            Some(v) => format!("{key}={v}"),
            None => key.to_owned(),
        };
        csv_field(field, quote)
    })
}

/// `field` as a CSV field: quoted when it must be, or when `force`d.
fn csv_field(field: String, force: bool) -> String {
    if force || field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// A backend's required fields, with values, among a few random fields in random order: often
/// accepted, often not.
fn candidate() -> impl Strategy<Value = String> {
    let required = prop::sample::select(vec![
        &["target", "claim"][..],
        &["dst", "src"][..],
        &["target", "server", "path"][..],
        &[
            "destination",
            "bucket",
            "endpoint",
            "access-key-id-env",
            "secret-file",
        ][..],
    ]);
    (
        required,
        prop::collection::vec((value(), any::<bool>()), 5),
        prop::collection::vec(field(), 0..4),
    )
        .prop_flat_map(|(keys, values, extra)| {
            let mut fields: Vec<String> = keys
                .iter()
                .zip(values)
                .map(|(key, (value, quote))| csv_field(format!("{key}={value}"), quote))
                .collect();
            fields.extend(extra);
            Just(fields).prop_shuffle()
        })
        .prop_map(|fields| fields.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rendering_parses_back_to_the_same_spec(spec in spec()) {
        let rendered = spec.to_string();
        let parsed: VolumeSpec = rendered.parse().map_err(|e| TestCaseError::fail(format!("{rendered:?}: {e}")))?;
        prop_assert_eq!(parsed, spec);
    }

    #[test]
    fn any_spelling_of_a_spec_parses_to_it(spec in spec(), tape in prop::collection::vec(any::<u32>(), 1..64)) {
        let written = noisy(&spec, &mut Tape(tape, 0));
        let parsed: VolumeSpec = written.parse().map_err(|e| TestCaseError::fail(format!("{written:?}: {e}")))?;
        prop_assert_eq!(&parsed, &spec, "{:?}", written);
        let rendered = parsed.to_string();
        prop_assert_eq!(rendered.parse::<VolumeSpec>().ok(), Some(parsed));
    }

    #[test]
    fn what_the_parser_accepts_renders_to_the_same_spec(written in candidate()) {
        if let Ok(spec) = written.parse::<VolumeSpec>() {
            let rendered = spec.to_string();
            prop_assert_eq!(rendered.parse::<VolumeSpec>().ok(), Some(spec), "{:?} → {:?}", written, rendered);
        }
    }

    #[test]
    fn arbitrary_strings_never_panic_and_round_trip_when_accepted(s in "[ -~\n\"]{0,60}") {
        if let Ok(spec) = s.parse::<VolumeSpec>() {
            prop_assert_eq!(spec.to_string().parse::<VolumeSpec>().ok(), Some(spec));
        }
    }

    #[test]
    fn the_wire_form_survives_json_and_from_wire(spec in spec()) {
        prop_assume!(spec.kind() != VolumeBackendKind::Ossfs);
        let wire = spec.to_wire(&no_secrets()).unwrap();
        let json = serde_json::to_string(&wire).unwrap();
        let back: wire::Volume = serde_json::from_str(&json).unwrap();
        let shown = VolumeSpec::from_wire(&back).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(shown.to_wire(&no_secrets()).unwrap(), wire);
        // And what is shown parses back to what was shown.
        prop_assert_eq!(shown.to_string().parse::<VolumeSpec>().ok(), Some(shown));
    }

    #[test]
    fn assigned_names_are_unique_and_keep_explicit_ones(
        targets in prop::collection::vec(prop_oneof!["/[a-c_]{0,3}", "/[a-c]{60,64}"], 1..12),
        explicit in prop::collection::vec(prop::option::of(prop_oneof![Just("a".to_owned()), Just("a-2".to_owned()), "[a-c]{1,3}(-[2-4])?"]), 12),
    ) {
        let mut specs: Vec<VolumeSpec> = targets
            .iter()
            .zip(&explicit)
            .map(|(target, name)| VolumeSpec {
                name: name.clone(),
                target: target.clone(),
                sub_path: None,
                read_only: false,
                backend: VolumeBackend::Host(HostSpec { source: "/srv".into() }),
            })
            .collect();
        let before = specs.clone();
        assign_names(&mut specs);
        let mut copy = before.clone();
        assign_names(&mut copy);
        prop_assert_eq!(&copy, &specs, "deterministic");
        let explicit_names: Vec<&String> = before.iter().filter_map(|s| s.name.as_ref()).collect();
        let mut derived_seen = std::collections::BTreeSet::new();
        for (b, a) in before.iter().zip(&specs) {
            let name = a.name.clone().unwrap();
            match &b.name {
                Some(given) => prop_assert_eq!(given, &name),
                None => {
                    prop_assert!(berth_core::model::is_dns_label(&name), "{}", name);
                    prop_assert!(!explicit_names.contains(&&name), "{} is explicit", name);
                    prop_assert!(derived_seen.insert(name.clone()), "{} twice", name);
                }
            }
        }
    }
}

#[test]
fn ossfs_credentials_default_to_the_usual_variables() {
    let spec = parse("type=ossfs,bucket=my-bucket,endpoint=e,target=/o");
    let VolumeBackend::Ossfs(ossfs) = &spec.backend else {
        panic!("not ossfs: {spec:?}")
    };
    assert_eq!(
        ossfs.access_key_id,
        AccessKeyId::Env("OSS_ACCESS_KEY_ID".into())
    );
    assert_eq!(ossfs.secret, SecretRef::Env("OSS_ACCESS_KEY_SECRET".into()));
    // Written out when shown, so the spec says where its credentials come from.
    assert_eq!(
        spec.to_string(),
        "type=ossfs,bucket=my-bucket,endpoint=e,target=/o,access-key-id-env=OSS_ACCESS_KEY_ID,secret-env=OSS_ACCESS_KEY_SECRET"
    );
    // Only the one not named falls back.
    let spec = parse("type=ossfs,bucket=my-bucket,endpoint=e,target=/o,access-key-id=AK");
    let VolumeBackend::Ossfs(ossfs) = &spec.backend else {
        panic!("not ossfs: {spec:?}")
    };
    assert_eq!(ossfs.access_key_id, AccessKeyId::Value("AK".into()));
    assert_eq!(ossfs.secret, SecretRef::Env("OSS_ACCESS_KEY_SECRET".into()));
}

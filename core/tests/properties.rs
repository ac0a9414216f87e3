//! Properties of the path rules and the wire/model conversion, checked with proptest over
//! generators that mostly produce near-valid input, so that both outcomes occur. Each property
//! runs at least 1000 cases and prints its accept ratio (`cargo test -- --nocapture`).
//!
//! The oracles here are written separately from the validator: they resolve paths by splitting
//! into components, never by calling the code under test.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use berth_core::model::{HostPath, MountPath, SandboxSpec, SubPath};
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

const CASES: u32 = 2000;

/// Resolves `.`, `..` and empty segments of `path` the way a kernel would without symlinks,
/// returning the components (never above the root).
fn oracle_components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_owned()),
        }
    }
    out
}

/// Segments that are mostly fine, with the troublesome ones mixed in.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec!["a", "b", "data", "uid-1", "session-7", "..hidden", "a..b", "ü", "日本", "x y"]).prop_map(str::to_owned),
        4 => "[a-z0-9._-]{1,12}",
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just(String::new()),
        1 => prop::sample::select(vec!["a\\b", "nul\0", "new\nline", ":", ","]).prop_map(str::to_owned),
        1 => Just("s".repeat(256)),
    ]
}

fn relative_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 1..6),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(segments, leading, trailing)| {
            let mut s = segments.join("/");
            if leading {
                s.insert(0, '/');
            }
            if trailing {
                s.push('/');
            }
            s
        })
}

fn absolute_path() -> impl Strategy<Value = String> {
    relative_path().prop_map(|p| {
        if p.starts_with('/') {
            p
        } else {
            format!("/{p}")
        }
    })
}

/// Runs `property` over `strategy` and returns (accepted, total); prints the ratio.
fn run<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) {
    let accepted = std::cell::Cell::new(0u32);
    let total = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |value| {
        total.set(total.get() + 1);
        if property(value)? {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let (a, t) = (accepted.get(), total.get());
    println!(
        "{name}: {t} cases, {a} accepted ({:.1}%)",
        100.0 * f64::from(a) / f64::from(t)
    );
    assert!(t >= 1000, "{name}: only {t} cases ran");
    assert!(
        a > t / 10 && a < t - t / 10,
        "{name}: the generator is lopsided ({a} of {t} accepted)"
    );
}

#[test]
fn an_accepted_sub_path_joined_to_any_base_stays_under_it() {
    run(
        "subPath join",
        (relative_path(), absolute_path()),
        |(sub, base)| {
            let Ok(sub_path) = SubPath::new(&sub) else {
                return Ok(false);
            };
            let joined = sub_path.join_to(&base);
            let base_parts = oracle_components(&base);
            let joined_parts = oracle_components(&joined);
            prop_assert!(
                joined_parts.len() > base_parts.len() && joined_parts.starts_with(&base_parts),
                "{sub:?} joined to {base:?} resolves to {joined_parts:?}, outside {base_parts:?}"
            );
            Ok(true)
        },
    );
}

#[test]
fn accepted_paths_are_already_normal() {
    run("normal form", relative_path(), |raw| {
        let mut any = false;
        if let Ok(sub) = SubPath::new(&raw) {
            prop_assert_eq!(oracle_components(sub.as_str()).join("/"), sub.as_str());
            any = true;
        }
        let absolute = format!("/{raw}");
        if let Ok(mount) = MountPath::new(&absolute) {
            prop_assert_eq!(
                format!("/{}", oracle_components(mount.as_str()).join("/")),
                mount.as_str()
            );
            any = true;
        }
        if let Ok(host) = HostPath::new(&absolute) {
            prop_assert_eq!(
                format!("/{}", oracle_components(host.as_str()).join("/")),
                host.as_str()
            );
            any = true;
        }
        // Normal spellings of the same place are never two different accepted values.
        if let (Ok(a), Ok(b)) = (
            MountPath::new(&absolute),
            MountPath::new(&format!("{absolute}/")),
        ) {
            prop_assert!(false, "both {a} and {b} were accepted");
        }
        Ok(any)
    });
}

/// Roots and paths from a small alphabet, so prefixes and near-prefixes are common.
fn allowlist_case() -> impl Strategy<Value = (Vec<String>, String)> {
    let seg = prop::sample::select(vec![
        "data",
        "dat",
        "data2",
        "opensandbox",
        "opensandbox-evil",
        "x",
        "ab",
        "a",
    ]);
    let path = prop::collection::vec(seg, 0..4).prop_map(|s| format!("/{}", s.join("/")));
    (prop::collection::vec(path.clone(), 1..3), path)
}

#[test]
fn the_host_allowlist_agrees_with_a_component_wise_oracle() {
    run("host allowlist", allowlist_case(), |(roots, path)| {
        let roots: Vec<HostPath> = roots.iter().map(|r| HostPath::new(r).unwrap()).collect();
        let oracle = roots.iter().any(|root| {
            let r = oracle_components(root.as_str());
            oracle_components(&path).starts_with(&r)
        });
        let policy = StoragePolicy {
            allowed_host_roots: roots.clone(),
            max_timeout_seconds: None,
        };
        let request = common::with_volumes(vec![
            json!({"name": "h", "host": {"path": path}, "mountPath": "/h"}),
        ]);
        let validated = common::validate(request, &policy).is_ok();
        prop_assert_eq!(validated, oracle, "path {} roots {:?}", path, roots);
        Ok(oracle)
    });
}

fn wire_volume(index: usize) -> impl Strategy<Value = wire::Volume> {
    let backend = prop_oneof![
        prop::sample::select(vec![
            "/data/opensandbox",
            "/data/opensandbox/skills",
            "/srv/shared/x",
            "/etc",
            "/data/opensandbox-evil"
        ])
        .prop_map(|p| (Some(wire::HostBackend { path: p.into() }), None, None, None)),
        (
            prop::sample::select(vec!["sessions", "team.sessions", "S", "x"]),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(prop::sample::select(vec!["1Gi", "500M", "512m"])),
            prop::option::of(prop::sample::select(vec![
                vec!["ReadWriteOnce"],
                vec!["ReadWriteMany", "ReadOnlyMany"],
                vec!["RWO"]
            ]))
        )
            .prop_map(|(claim, create, delete, storage, modes)| (
                None,
                Some(wire::PvcBackend {
                    claim_name: claim.into(),
                    create_if_not_exists: create,
                    delete_on_sandbox_termination: delete,
                    storage_class: None,
                    storage: storage.map(Into::into),
                    access_modes: modes.map(|m| m.into_iter().map(Into::into).collect()),
                }),
                None,
                None
            )),
        (
            prop::sample::select(vec!["models", "ab"]),
            prop::sample::select(vec!["1.0", "2.0"]),
            prop::sample::select(vec![
                vec![],
                vec!["kernel_cache"],
                vec!["umask=022", "noxattr"],
                vec!["allow_other"]
            ])
        )
            .prop_map(|(bucket, version, options)| (
                None,
                None,
                Some(wire::OssfsBackend {
                    bucket: bucket.into(),
                    endpoint: "oss.example.org".into(),
                    version: Some(version.into()),
                    options: (!options.is_empty())
                        .then(|| options.into_iter().map(Into::into).collect()),
                    access_key_id: "AKID".into(),
                    access_key_secret: "secret".into(),
                }),
                None
            )),
        (
            prop::sample::select(vec!["nas.example.org", "10.0.0.2", "bad host"]),
            prop::sample::select(vec![vec![], vec!["vers=4.1"], vec!["hard", "timeo=600"]])
        )
            .prop_map(|(server, options)| (
                None,
                None,
                None,
                Some(wire::NfsBackend {
                    server: server.into(),
                    path: "/exports/a".into(),
                    options: (!options.is_empty())
                        .then(|| options.into_iter().map(Into::into).collect()),
                    read_only: false,
                })
            )),
    ];
    (
        backend,
        prop::option::of(prop::sample::select(vec!["uid-1/session-1", "s", "../x"])),
        any::<bool>(),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            move |((host, pvc, ossfs, nfs), sub_path, read_only, clash)| wire::Volume {
                name: format!("v{index}"),
                host,
                pvc,
                ossfs,
                nfs,
                persistent_volume_claim: None,
                host_path: None,
                mount_path: Some(if clash {
                    "/mnt/v0".into()
                } else {
                    format!("/mnt/v{index}")
                }),
                read_only,
                sub_path: sub_path.map(Into::into),
            },
        )
}

fn wire_request() -> impl Strategy<Value = wire::CreateSandboxRequest> {
    let volumes = (0usize..4).prop_flat_map(|n| (0..n).map(wire_volume).collect::<Vec<_>>());
    (
        volumes,
        prop::option::of(prop::sample::select(vec![60i64, 3600, 86_400, 59])),
        prop::sample::select(vec![
            ("500m", "512Mi"),
            ("2", "1Gi"),
            ("1500m", "1536Mi"),
            ("1", "1000"),
        ]),
        prop::option::of(prop::sample::select(vec![
            vec![("team", "ml")],
            vec![("example.org/user", "u-1"), ("empty", "")],
        ])),
        prop::option::of(prop::sample::select(vec![
            vec![("A", "1")],
            vec![("LOG_LEVEL", "debug"), ("X", "")],
        ])),
    )
        .prop_map(|(volumes, timeout, (cpu, memory), metadata, env)| {
            wire::CreateSandboxRequest {
                image: Some(wire::ImageSpec {
                    uri: "team/agent:1".into(),
                    auth: None,
                }),
                entrypoint: Some(vec!["sleep".into(), "infinity".into()]),
                timeout,
                resource_limits: Some(
                    [
                        ("cpu".to_owned(), cpu.to_owned()),
                        ("memory".to_owned(), memory.to_owned()),
                    ]
                    .into(),
                ),
                metadata: metadata.map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                }),
                env: env.map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                }),
                volumes: (!volumes.is_empty()).then_some(volumes),
                ..Default::default()
            }
        })
}

#[test]
fn wire_to_model_to_wire_round_trips() {
    let policy = common::policy();
    run("wire round trip", wire_request(), |request| {
        let Ok(spec) = SandboxSpec::from_request(request.clone(), &policy) else {
            return Ok(false);
        };
        let canonical = wire::CreateSandboxRequest::from(&spec);
        // The generator writes canonical requests, so the conversion gives back exactly them.
        prop_assert_eq!(&canonical, &request);
        let again = SandboxSpec::from_request(canonical.clone(), &policy);
        prop_assert_eq!(again.as_ref(), Ok(&spec));
        // And through JSON, as a client would send it.
        let json = serde_json::to_string(&canonical).unwrap();
        let parsed: wire::CreateSandboxRequest = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(parsed, canonical);
        Ok(true)
    });
}

/// A Kubernetes-form volume: a name from a small set (so clashes with derived names occur) and one
/// source, mostly valid.
fn kubernetes_volume() -> impl Strategy<Value = wire::Volume> {
    let source = prop_oneof![
        (
            prop::sample::select(vec!["sessions", "team.sessions", "sessions", "S"]),
            any::<bool>()
        )
            .prop_map(|(claim, read_only)| (
                Some(wire::PersistentVolumeClaimSource {
                    claim_name: claim.into(),
                    read_only,
                }),
                None,
                None
            )),
        (
            prop::sample::select(vec!["/data/opensandbox/a", "/srv/shared", "/etc"]),
            prop::sample::select(vec![
                None,
                Some(""),
                Some("DirectoryOrCreate"),
                Some("File")
            ]),
        )
            .prop_map(|(path, kind)| (
                None,
                Some(wire::HostPathSource {
                    path: path.into(),
                    kind: kind.map(Into::into),
                }),
                None
            )),
        (
            prop::sample::select(vec!["nas.example.org", "bad host"]),
            any::<bool>()
        )
            .prop_map(|(server, read_only)| (
                None,
                None,
                Some(wire::NfsBackend {
                    server: server.into(),
                    path: "/exports/a".into(),
                    options: None,
                    read_only,
                })
            )),
    ];
    (
        prop::sample::select(vec![
            "data".to_owned(),
            "data-2".to_owned(),
            "cache".to_owned(),
            "logs".to_owned(),
            "models".to_owned(),
            "a".repeat(63),
        ]),
        source,
    )
        .prop_map(
            |(name, (persistent_volume_claim, host_path, nfs))| wire::Volume {
                name,
                host: None,
                pvc: None,
                ossfs: None,
                nfs,
                persistent_volume_claim,
                host_path,
                mount_path: None,
                read_only: false,
                sub_path: None,
            },
        )
}

/// A Kubernetes-form request: 1 to 3 volumes, each mounted 0 to 3 times (mostly once), the
/// mounts shuffled, now and then a mount of a volume that is not there or a repeated path.
fn kubernetes_request() -> impl Strategy<Value = wire::CreateSandboxRequest> {
    let mount = (
        prop::option::of(prop::sample::select(vec!["uid-1/s-1", "", "uid-2", "../x"])),
        any::<bool>(),
        prop::bool::weighted(0.03),
    );
    (
        prop::collection::vec(kubernetes_volume(), 1..4),
        prop::collection::vec(
            (
                prop::sample::select(vec![1usize, 1, 1, 1, 2, 2, 3, 0]),
                mount,
            ),
            3,
        ),
        prop::bool::weighted(0.05),
    )
        .prop_flat_map(|(volumes, mounts, ghost)| {
            let mut list = Vec::new();
            for (volume, (times, (sub_path, read_only, clash))) in volumes.iter().zip(mounts) {
                for _ in 0..times {
                    list.push((volume.name.clone(), sub_path, read_only, clash));
                }
            }
            if ghost {
                list.push(("ghost".to_owned(), None, false, false));
            }
            (Just(volumes), Just(list).prop_shuffle())
        })
        .prop_map(|(volumes, list)| {
            let mounts = list
                .into_iter()
                .enumerate()
                .map(
                    |(j, (name, sub_path, read_only, clash))| wire::VolumeMount {
                        name,
                        mount_path: if clash && j > 0 {
                            "/m0".to_owned()
                        } else {
                            format!("/m{j}")
                        },
                        sub_path: sub_path.map(str::to_owned),
                        read_only,
                    },
                )
                .collect();
            wire::CreateSandboxRequest {
                volumes: Some(volumes),
                mounts: Some(mounts),
                ..base_request()
            }
        })
}

/// The tables' valid base request, without volumes.
fn base_request() -> wire::CreateSandboxRequest {
    serde_json::from_value(common::request(json!({}))).unwrap()
}

/// The model name of the `n`-th mount (from 1) of volume `name`, computed from the rule as
/// documented rather than by the validator's code.
fn expected_mount_name(name: &str, n: usize) -> String {
    if n == 1 {
        return name.to_owned();
    }
    let suffix = format!("-{n}");
    let prefix: String = name.chars().take(63 - suffix.len()).collect();
    prefix + &suffix
}

#[test]
fn the_kubernetes_form_validates_to_one_volume_per_mount_equal_to_berths_form() {
    let policy = common::policy();
    run("kubernetes form", kubernetes_request(), |request| {
        let Ok(spec) = SandboxSpec::from_request(request.clone(), &policy) else {
            return Ok(false);
        };
        let volumes = request.volumes.as_deref().unwrap_or_default();
        let mounts = request.mounts.as_deref().unwrap_or_default();
        prop_assert_eq!(spec.volumes.len(), mounts.len());
        let mut seen: Vec<&str> = Vec::new();
        for (j, (mount, model)) in mounts.iter().zip(&spec.volumes).enumerate() {
            let source = volumes.iter().find(|v| v.name == mount.name).unwrap();
            let n = mounts[..j].iter().filter(|m| m.name == mount.name).count() + 1;
            prop_assert_eq!(model.name.as_str(), expected_mount_name(&mount.name, n));
            prop_assert!(!seen.contains(&model.name.as_str()), "{} twice", model.name);
            seen.push(model.name.as_str());
            prop_assert_eq!(model.mount_path.as_str(), mount.mount_path.as_str());
            prop_assert_eq!(
                model.sub_path.as_ref().map(|s| s.as_str()),
                mount.sub_path.as_deref().filter(|s| !s.is_empty())
            );
            let source_read_only = source
                .persistent_volume_claim
                .as_ref()
                .is_some_and(|p| p.read_only)
                || source.nfs.as_ref().is_some_and(|n| n.read_only);
            prop_assert_eq!(model.read_only, mount.read_only || source_read_only);
            match (&model.source, source) {
                (
                    berth_core::model::VolumeSource::Pvc(p),
                    wire::Volume {
                        persistent_volume_claim: Some(claim),
                        ..
                    },
                ) => {
                    prop_assert_eq!(p.claim_name.as_str(), claim.claim_name.as_str());
                    prop_assert!(
                        !p.create_if_not_exists,
                        "a Kubernetes claim is never created"
                    );
                }
                (
                    berth_core::model::VolumeSource::Host { path },
                    wire::Volume {
                        host_path: Some(h), ..
                    },
                ) => prop_assert_eq!(path.as_str(), h.path.as_str()),
                (berth_core::model::VolumeSource::Nfs(n), wire::Volume { nfs: Some(w), .. }) => {
                    prop_assert_eq!(n.server.to_string(), w.server.clone())
                }
                (model, wire) => prop_assert!(false, "{model:?} from {wire:?}"),
            }
        }
        // Berth's own form of the same spec validates to the same spec.
        let berth_form = wire::CreateSandboxRequest::from(&spec);
        prop_assert!(berth_form.mounts.is_none());
        let again = SandboxSpec::from_request(berth_form, &policy);
        prop_assert_eq!(again.as_ref(), Ok(&spec));
        Ok(true)
    });
}

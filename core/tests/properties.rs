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
                mount_path: if clash {
                    "/mnt/v0".into()
                } else {
                    format!("/mnt/v{index}")
                },
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

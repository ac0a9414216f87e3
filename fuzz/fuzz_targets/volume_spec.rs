//! The `berth create --volume` syntax, on any string: an accepted spec's canonical text
//! (`Display`) parses back to the same spec and is a fixed point, and a spec other than ossfs
//! survives the trip through the request's `volumes[]` item (`to_wire`, `from_wire`).
#![no_main]

use std::io;
use std::path::Path;
use std::str::FromStr;

use berth_cli::volume_spec::{SecretSource, VolumeBackend, VolumeSpec, derive_name};
use libfuzzer_sys::fuzz_target;

/// Credentials for any name, so that `to_wire` of an ossfs spec never reads this process's
/// environment or files.
struct FixedSecrets;

impl SecretSource for FixedSecrets {
    fn env_var(&self, name: &str) -> Result<String, std::env::VarError> {
        Ok(format!("value-of-{name}"))
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        Ok(format!("content-of-{}\n", path.display()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = VolumeSpec::from_str(s) else {
        return;
    };
    let canonical = spec.to_string();
    let reparsed = VolumeSpec::from_str(&canonical)
        .unwrap_or_else(|e| panic!("{s:?} gave canonical {canonical:?}, which fails: {e}"));
    assert_eq!(reparsed, spec, "{s:?} → {canonical:?}");
    assert_eq!(reparsed.to_string(), canonical, "not a fixed point");

    let wire = spec
        .to_wire(&FixedSecrets)
        .unwrap_or_else(|e| panic!("to_wire of {s:?}: {e}"));
    assert_eq!(wire.name, spec.effective_name());
    assert_eq!(wire.mount_path.as_deref(), Some(spec.target.as_str()));
    if matches!(spec.backend, VolumeBackend::Ossfs(_)) {
        assert!(VolumeSpec::from_wire(&wire).is_err(), "ossfs from the wire");
        return;
    }
    let back = VolumeSpec::from_wire(&wire).unwrap_or_else(|e| panic!("from_wire of {s:?}: {e}"));
    // The wire keeps no difference between an explicit name equal to the derived one and none.
    let mut expected = spec.clone();
    if expected.name.as_deref() == Some(derive_name(&spec.target).as_str()) {
        expected.name = None;
    }
    assert_eq!(back, expected, "{s:?} through the wire");
});

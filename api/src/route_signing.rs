//! Signed endpoint routes: `GET /v1/sandboxes/{id}/endpoints/{port}?expires=<epoch seconds>`
//! answers a proxy route whose path carries a token, and a request on that route is admitted
//! without the API key until the expiry.
//!
//! A token is `<expires>.<tag>`: the expiry in epoch seconds and the HMAC-SHA256 (base64url) of
//! the sandbox id, the port and the expiry, under a route signing key. Keys come from
//! `server.route_signing_keys` (the first signs, any verifies, so keys can be rotated), or else
//! from one key generated on first use and kept, mode 0600, in `<state_dir>/route-signing.key`.
//! Tags are compared in constant time, against every key.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_core::ErrorCode;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;

/// Shortest accepted key (characters of `server.route_signing_keys`, or of the key file).
pub const MIN_KEY_LEN: usize = 32;
/// The generated key's file in `storage.state_dir`.
pub const KEY_FILE_NAME: &str = "route-signing.key";
/// Longest a signed route may be valid for: a leaked link must not work for ever.
pub const MAX_LIFETIME_SECONDS: i64 = 30 * 86_400;

/// Where route signing keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `server.route_signing_keys`: the first signs, any verifies.
    Configured(Vec<String>),
    /// One key kept in this file (mode 0600), generated when it does not exist yet.
    File(PathBuf),
    /// One random key in memory, lost when the process ends (tests, servers built in code).
    Ephemeral,
}

/// Signs and verifies route tokens.
#[derive(Debug)]
pub struct RouteSigner {
    source: KeySource,
    /// The keys, once read (a key file is read or made on first use, so a server whose
    /// `state_dir` is read-only starts, and only signed routes need the key file).
    keys: Mutex<Option<Arc<Vec<Vec<u8>>>>>,
}

impl RouteSigner {
    /// A signer over `source`; nothing is read until a token is signed or checked.
    pub fn new(source: KeySource) -> Self {
        Self {
            source,
            keys: Mutex::new(None),
        }
    }

    fn keys(&self) -> Result<Arc<Vec<Vec<u8>>>, ApiError> {
        let mut loaded = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(keys) = &*loaded {
            return Ok(Arc::clone(keys));
        }
        let keys = match &self.source {
            KeySource::Configured(keys) => keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            KeySource::File(path) => vec![load_or_create(path).map_err(|detail| {
                let mut e = ApiError::new(
                    ErrorCode::GeneralInternalError,
                    "signed routes need a key: set server.route_signing_keys, or let the server write storage.state_dir",
                );
                e.detail = Some(format!("route signing key {}: {detail}", path.display()));
                e
            })?],
            KeySource::Ephemeral => vec![random_key().map_err(|detail| {
                let mut e = ApiError::new(
                    ErrorCode::GeneralInternalError,
                    "no route signing key could be made",
                );
                e.detail = Some(detail);
                e
            })?],
        };
        let keys = Arc::new(keys);
        *loaded = Some(Arc::clone(&keys));
        Ok(keys)
    }

    /// The token for `sandbox_id`'s `port` until `expires` (epoch seconds).
    pub fn sign(&self, sandbox_id: &str, port: u16, expires: i64) -> Result<String, ApiError> {
        let keys = self.keys()?;
        let Some(key) = keys.first() else {
            return Err(ApiError::new(
                ErrorCode::GeneralInternalError,
                "no route signing key is configured",
            ));
        };
        Ok(format!(
            "{expires}.{}",
            URL_SAFE_NO_PAD.encode(tag(key, sandbox_id, port, expires))
        ))
    }

    /// Admits `token` for `sandbox_id`'s `port` at `now` (epoch seconds): 403
    /// `SANDBOX::ROUTE_TOKEN_INVALID` unless one of the keys signed it for exactly this sandbox
    /// and port, then 401 `SANDBOX::ROUTE_TOKEN_EXPIRED` once its expiry has passed.
    pub fn verify(
        &self,
        token: &str,
        sandbox_id: &str,
        port: u16,
        now: i64,
    ) -> Result<(), ApiError> {
        let invalid = || {
            ApiError::new(
                ErrorCode::SandboxRouteTokenInvalid,
                format!(
                    "the route token is not one this server signed for sandbox {sandbox_id:?} and port {port}"
                ),
            )
        };
        let (expires, given) = token.split_once('.').ok_or_else(invalid)?;
        if expires.is_empty() || expires.len() > 12 || !expires.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        let expires: i64 = expires.parse().map_err(|_| invalid())?;
        let given = URL_SAFE_NO_PAD.decode(given).map_err(|_| invalid())?;
        let mut valid = Choice::from(0);
        for key in self.keys()?.iter() {
            valid |= tag(key, sandbox_id, port, expires).as_slice().ct_eq(&given);
        }
        if !bool::from(valid) {
            return Err(invalid());
        }
        if expires <= now {
            let at = DateTime::<Utc>::from_timestamp(expires, 0)
                .map_or_else(|| expires.to_string(), |t| t.to_rfc3339());
            return Err(ApiError::new(
                ErrorCode::SandboxRouteTokenExpired,
                format!(
                    "the route token expired at {at}; ask GET /v1/sandboxes/{sandbox_id}/endpoints/{port}?expires=... for a new one"
                ),
            ));
        }
        Ok(())
    }
}

/// The expiry an endpoint request asks for, checked: epoch seconds in the future and at most
/// [`MAX_LIFETIME_SECONDS`] ahead of `now`.
pub fn check_expires(raw: &str, now: DateTime<Utc>) -> Result<i64, ApiError> {
    let expires: i64 = raw.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::GeneralInvalidQuery,
            format!("expires: {raw:?} is not a time in epoch seconds"),
        )
    })?;
    let now = now.timestamp();
    if expires <= now {
        return Err(ApiError::new(
            ErrorCode::SandboxInvalidExpiration,
            format!("expires: {expires} is not in the future (now is {now})"),
        ));
    }
    if expires - now > MAX_LIFETIME_SECONDS {
        return Err(ApiError::new(
            ErrorCode::SandboxInvalidExpiration,
            format!(
                "expires: {expires} is more than {} days ahead; ask for a shorter route and a new one later",
                MAX_LIFETIME_SECONDS / 86_400
            ),
        ));
    }
    Ok(expires)
}

/// The MAC of one route. The fields are separated by a byte no sandbox id holds, so no two
/// routes share a message.
fn tag(key: &[u8], sandbox_id: &str, port: u16, expires: i64) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"berth-route-v1\n");
    mac.update(sandbox_id.as_bytes());
    mac.update(format!("\n{port}\n{expires}").as_bytes());
    mac.finalize().into_bytes().into()
}

/// 32 random bytes as 64 hex characters (a key is used as the text it is kept as).
fn random_key() -> Result<Vec<u8>, String> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes())
}

/// The uid files of this process are created with (the owner of `/proc/self`), if known.
fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Reads the key file, or makes it (`O_EXCL`, mode 0600) when it does not exist.
fn load_or_create(path: &Path) -> Result<Vec<u8>, String> {
    match read_key_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other.map_err(|e| e.to_string())?,
    }
    if let Some(dir) = path.parent() {
        // One level only: the state directory's parent is the operator's to make.
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
    }
    let key = random_key()?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(&key)
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("writing: {e}"))?;
            tracing::info!(path = %path.display(), "route signing key generated");
            Ok(key)
        }
        // Another process made it first: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key_file(path).map_err(|e| e.to_string())?
        }
        Err(e) => Err(format!("creating: {e}")),
    }
}

/// The key in an existing file: a regular file (never a link) of this process's user that no
/// one else may read or write. `Err` is the I/O error (NotFound when absent); `Ok(Err)` a file
/// that is there but refused.
fn read_key_file(path: &Path) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Ok(Err("not a regular file".into()));
    }
    if meta.mode() & 0o077 != 0 {
        return Ok(Err(format!(
            "mode {:o} lets others read or write it; it must be 0600",
            meta.mode() & 0o777
        )));
    }
    if let Some(uid) = own_uid()
        && meta.uid() != uid
    {
        return Ok(Err(format!(
            "owned by uid {}, not by this server's uid {uid}",
            meta.uid()
        )));
    }
    let mut text = String::new();
    (&mut file).take(4096).read_to_string(&mut text)?;
    let key = text.trim();
    if key.len() < MIN_KEY_LEN {
        return Ok(Err(format!(
            "holds {} characters; a key has at least {MIN_KEY_LEN}",
            key.len()
        )));
    }
    Ok(Ok(key.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(keys: &[&str]) -> RouteSigner {
        RouteSigner::new(KeySource::Configured(
            keys.iter().map(|k| (*k).to_owned()).collect(),
        ))
    }

    const A: &str = "0123456789abcdef0123456789abcdef-a";
    const B: &str = "0123456789abcdef0123456789abcdef-b";

    #[test]
    fn a_token_is_bound_to_sandbox_port_and_expiry() {
        let s = signer(&[A]);
        let token = s.sign("sb", 8080, 2_000).unwrap();
        assert!(token.starts_with("2000."), "{token}");
        s.verify(&token, "sb", 8080, 1_999).unwrap();
        for (id, port) in [("other", 8080), ("sb", 8081)] {
            let e = s.verify(&token, id, port, 1_000).unwrap_err();
            assert_eq!(e.code, ErrorCode::SandboxRouteTokenInvalid, "{id} {port}");
        }
        // A later expiry with the same tag is a forgery, not an extension.
        let (_, tag) = token.split_once('.').unwrap();
        let e = s
            .verify(&format!("3000.{tag}"), "sb", 8080, 2_500)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SandboxRouteTokenInvalid);
        let e = s.verify(&token, "sb", 8080, 2_000).unwrap_err();
        assert_eq!(e.code, ErrorCode::SandboxRouteTokenExpired);
        for bad in ["", ".", "2000", "2000.", "x.y", "-1.AAAA", "2000.!!!!"] {
            let e = s.verify(bad, "sb", 8080, 1_000).unwrap_err();
            assert_eq!(e.code, ErrorCode::SandboxRouteTokenInvalid, "{bad:?}");
        }
    }

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let old = signer(&[A]).sign("sb", 1, 100).unwrap();
        let rotated = signer(&[B, A]);
        rotated.verify(&old, "sb", 1, 50).unwrap();
        let new = rotated.sign("sb", 1, 100).unwrap();
        assert_ne!(new, old);
        signer(&[B]).verify(&new, "sb", 1, 50).unwrap();
        assert_eq!(
            signer(&[A]).verify(&new, "sb", 1, 50).unwrap_err().code,
            ErrorCode::SandboxRouteTokenInvalid
        );
    }

    #[test]
    fn expiries_must_be_ahead_and_not_too_far() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(check_expires("1000001", now).unwrap(), 1_000_001);
        let last = (1_000_000 + MAX_LIFETIME_SECONDS).to_string();
        assert!(check_expires(&last, now).is_ok());
        for (raw, code) in [
            ("1000000", ErrorCode::SandboxInvalidExpiration),
            ("5", ErrorCode::SandboxInvalidExpiration),
            (
                &(1_000_001 + MAX_LIFETIME_SECONDS).to_string(),
                ErrorCode::SandboxInvalidExpiration,
            ),
            ("soon", ErrorCode::GeneralInvalidQuery),
            ("1e9", ErrorCode::GeneralInvalidQuery),
        ] {
            assert_eq!(check_expires(raw, now).unwrap_err().code, code, "{raw}");
        }
    }
}

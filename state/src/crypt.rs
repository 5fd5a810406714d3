//! Per-value encryption of sensitive values in state.
//!
//! State must keep sensitive values (later runs compare and reuse them), but a state file or
//! object should not hand them to whoever can read it. When the user provides a key
//! (`KDEPLOY_STATE_KEY`, or `KDEPLOY_STATE_KEY_FILE` naming a file holding it), every value at
//! a resource's `sensitive_paths` and every sensitive output is encrypted on its own; the rest
//! of the state (addresses, types, non-sensitive attributes, serial, lineage) stays readable.
//!
//! # Format
//!
//! The state document gains an `encryption` header:
//!
//! ```json
//! "encryption": {
//!   "version": 1,
//!   "kdf": "hkdf-sha256",
//!   "cipher": "xchacha20poly1305",
//!   "salt": "<base64, 16 random bytes>",
//!   "check": "(encrypted) kdeploy:v1:<base64>"
//! }
//! ```
//!
//! - The 32-byte value key is `HKDF-SHA256(ikm = the key's bytes, salt = salt, info =
//!   "kdeploy state encryption v1")`. The salt is chosen at random when a state is first
//!   encrypted and kept afterwards, so values encrypted earlier stay readable. HKDF does not
//!   stretch a weak passphrase: use a random key, e.g. `openssl rand -base64 32`.
//! - Each encrypted value is replaced by the string
//!   `"(encrypted) kdeploy:v1:" + base64(nonce || ciphertext)`: XChaCha20-Poly1305 with a random
//!   24-byte nonce over the value's JSON text, with the associated data
//!   `"kdeploy state value v1"`. The JSON type of the value is restored on decryption.
//! - `check` is the encryption of the constant `"kdeploy-key-check"`; a key that cannot open it
//!   is the wrong key, which is reported instead of producing garbage.
//!
//! # Without the key
//!
//! Reading works: encrypted values simply stay in their `(encrypted) ...` marker form, which is
//! what `kdeploy output` and `kdeploy state pull` then show. Writing keeps those markers (and
//! the header) unchanged, so `state rm`/`state mv` and `state pull`/`state push` do not destroy
//! them. Writing a new cleartext sensitive value into an encrypted state without the key is
//! refused rather than stored in clear. A state that was never encrypted and is written
//! without a key stays in clear, as before this feature.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use kdeploy_provider::AttrPath;
use kdeploy_provider::value::PathStep;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StateError;
use crate::journal::Record;
use crate::lock::LockInfo;
use crate::model::State;
use crate::store::{Append, StateStore};

/// The environment variable holding the key.
pub const KEY_ENV: &str = "KDEPLOY_STATE_KEY";
/// The environment variable naming a file that holds the key.
pub const KEY_FILE_ENV: &str = "KDEPLOY_STATE_KEY_FILE";
/// Every encrypted value starts with this.
pub const ENCRYPTED_PREFIX: &str = "(encrypted) ";
const VALUE_PREFIX: &str = "(encrypted) kdeploy:v1:";
const HKDF_INFO: &[u8] = b"kdeploy state encryption v1";
const AAD: &[u8] = b"kdeploy state value v1";
const CHECK: &[u8] = b"kdeploy-key-check";

/// The `encryption` header of an encrypted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionHeader {
    pub version: u32,
    pub kdf: String,
    pub cipher: String,
    /// Base64 of the HKDF salt.
    pub salt: String,
    /// The encrypted key-check constant.
    pub check: String,
}

/// The user's state key (never printed).
#[derive(Clone)]
pub struct StateKey {
    secret: Vec<u8>,
    /// Where it came from, for messages.
    source: String,
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateKey(from {})", self.source)
    }
}

impl StateKey {
    /// A key from its text.
    pub fn new(secret: impl AsRef<[u8]>, source: &str) -> StateKey {
        StateKey { secret: secret.as_ref().to_vec(), source: source.to_string() }
    }

    /// The key from `KDEPLOY_STATE_KEY` or the file named by `KDEPLOY_STATE_KEY_FILE` (a
    /// relative path is taken from `base`), `None` when neither is set.
    pub fn from_env(env: &BTreeMap<String, String>, base: &std::path::Path) -> Result<Option<StateKey>, StateError> {
        if let Some(k) = env.get(KEY_ENV).filter(|k| !k.is_empty()) {
            return Ok(Some(StateKey::new(k.as_bytes(), KEY_ENV)));
        }
        if let Some(p) = env.get(KEY_FILE_ENV).filter(|k| !k.is_empty()) {
            let path = base.join(PathBuf::from(p));
            let text = std::fs::read_to_string(&path).map_err(|e| StateError::io("read the state key file", &path, e))?;
            let key = text.trim_end_matches(['\n', '\r']);
            if key.is_empty() {
                return Err(StateError::Encryption { message: format!("the state key file {} ({KEY_FILE_ENV}) is empty", path.display()) });
            }
            return Ok(Some(StateKey::new(key.as_bytes(), &format!("{KEY_FILE_ENV} {}", path.display()))));
        }
        Ok(None)
    }

    fn cipher(&self, salt: &[u8]) -> XChaCha20Poly1305 {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &self.secret);
        let mut okm = [0u8; 32];
        hk.expand(HKDF_INFO, &mut okm).expect("32 bytes is a valid HKDF-SHA256 length");
        XChaCha20Poly1305::new((&okm).into())
    }

    /// The cipher for `header`, checking that this key is the one the state was encrypted with.
    fn cipher_for(&self, header: &EncryptionHeader, location: &str) -> Result<XChaCha20Poly1305, StateError> {
        if header.version != 1 || header.kdf != "hkdf-sha256" || header.cipher != "xchacha20poly1305" {
            return Err(StateError::Encryption {
                message: format!(
                    "the state at {location} uses an encryption scheme this kdeploy does not know ({} {} version {}); upgrade kdeploy",
                    header.kdf, header.cipher, header.version
                ),
            });
        }
        let salt = B64
            .decode(&header.salt)
            .map_err(|_| StateError::Encryption { message: format!("the encryption header of the state at {location} is damaged (salt)") })?;
        let cipher = self.cipher(&salt);
        match decrypt_text(&cipher, &header.check) {
            Some(v) if v == CHECK => Ok(cipher),
            _ => Err(StateError::Encryption {
                message: format!(
                    "the state at {location} was encrypted with another key than the one in {}; set the right key (its sensitive values cannot be read or written with this one)",
                    self.source
                ),
            }),
        }
    }

    fn new_header(&self) -> (EncryptionHeader, XChaCha20Poly1305) {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let cipher = self.cipher(&salt);
        let header = EncryptionHeader {
            version: 1,
            kdf: "hkdf-sha256".into(),
            cipher: "xchacha20poly1305".into(),
            salt: B64.encode(salt),
            check: encrypt_bytes(&cipher, CHECK),
        };
        (header, cipher)
    }
}

/// Whether `v` is an encrypted value.
pub fn is_encrypted(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.starts_with(VALUE_PREFIX))
}

fn encrypt_bytes(cipher: &XChaCha20Poly1305, plain: &[u8]) -> String {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher.encrypt(&nonce, Payload { msg: plain, aad: AAD }).expect("XChaCha20-Poly1305 encryption does not fail");
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&ct);
    format!("{VALUE_PREFIX}{}", B64.encode(bytes))
}

fn decrypt_text(cipher: &XChaCha20Poly1305, text: &str) -> Option<Vec<u8>> {
    let bytes = B64.decode(text.strip_prefix(VALUE_PREFIX)?).ok()?;
    if bytes.len() < 24 {
        return None;
    }
    let (nonce, ct) = bytes.split_at(24);
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: AAD }).ok()
}

fn get_mut<'a>(mut cur: &'a mut Value, path: &AttrPath) -> Option<&'a mut Value> {
    for step in &path.0 {
        cur = match (step, cur) {
            (PathStep::Key(k), Value::Object(o)) => o.get_mut(k)?,
            (PathStep::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Decrypts every encrypted string anywhere in `v`.
fn open_all(v: &mut Value, cipher: &XChaCha20Poly1305, location: &str) -> Result<(), StateError> {
    match v {
        Value::String(s) if s.starts_with(VALUE_PREFIX) => {
            let plain = decrypt_text(cipher, s).ok_or_else(|| StateError::Encryption {
                message: format!("an encrypted value in the state at {location} is damaged and cannot be decrypted"),
            })?;
            *v = serde_json::from_slice(&plain)
                .map_err(|_| StateError::Encryption { message: format!("an encrypted value in the state at {location} is damaged") })?;
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|i| open_all(i, cipher, location)),
        Value::Object(map) => map.values_mut().try_for_each(|i| open_all(i, cipher, location)),
        _ => Ok(()),
    }
}

/// What happens to a sensitive value on its way to the store.
enum Sealing {
    /// Encrypted with the state's key.
    Encrypt(XChaCha20Poly1305),
    /// The state is encrypted but no key is set: ciphertext is kept, cleartext refused.
    RefuseClear,
    /// Neither key nor encryption: values are stored as they are.
    Keep,
}

impl Sealing {
    /// The sealing for a state with `header` (its `encryption`), and the header to store: with
    /// a key and no header yet, a new one.
    fn new(key: Option<&StateKey>, header: Option<&EncryptionHeader>, location: &str) -> Result<(Sealing, Option<EncryptionHeader>), StateError> {
        match (key, header) {
            (Some(key), Some(h)) => Ok((Sealing::Encrypt(key.cipher_for(h, location)?), Some(h.clone()))),
            (Some(key), None) => {
                let (h, c) = key.new_header();
                Ok((Sealing::Encrypt(c), Some(h)))
            }
            (None, Some(h)) => Ok((Sealing::RefuseClear, Some(h.clone()))),
            (None, None) => Ok((Sealing::Keep, None)),
        }
    }

    /// Seals one sensitive value found at `at`.
    fn value(&self, v: &mut Value, at: &str, location: &str) -> Result<(), StateError> {
        if v.is_null() || is_encrypted(v) {
            return Ok(());
        }
        match self {
            Sealing::Encrypt(cipher) => {
                let json = serde_json::to_vec(v).expect("JSON values serialize");
                *v = Value::String(encrypt_bytes(cipher, &json));
                Ok(())
            }
            Sealing::RefuseClear => Err(StateError::Encryption {
                message: format!(
                    "the state at {location} encrypts its sensitive values, but no key is set ({KEY_ENV} or {KEY_FILE_ENV}), so the new value of {at} cannot be stored; set the key and run again"
                ),
            }),
            Sealing::Keep => Ok(()),
        }
    }

    /// Seals the values at `paths` of `attributes` (outer paths first).
    fn paths(&self, attributes: &mut Value, paths: &[AttrPath], at: &dyn std::fmt::Display, location: &str) -> Result<(), StateError> {
        let mut paths = paths.to_vec();
        paths.sort_by_key(|p| p.0.len());
        for p in &paths {
            if let Some(v) = get_mut(attributes, p) {
                self.value(v, &format!("{at}.{p}"), location)?;
            }
        }
        Ok(())
    }

    /// Seals the sensitive values of one journal record: a resource's sensitive paths, a
    /// sensitive output, the sensitive paths of a pending operation's target.
    fn record(&self, record: &mut Record, location: &str) -> Result<(), StateError> {
        if matches!(self, Sealing::Keep) {
            return Ok(());
        }
        match record {
            Record::Upsert { resource } => {
                let paths = resource.sensitive_paths.clone();
                self.paths(&mut resource.attributes, &paths, &resource.address, location)
            }
            Record::Output { name, value: Some(o) } if o.sensitive => self.value(&mut o.value, &format!("output {name}"), location),
            Record::Begin { pending, sensitive_paths } => match &mut pending.target {
                Some(t) => self.paths(&mut t.attributes, sensitive_paths, &pending.address, location),
                None => Ok(()),
            },
            Record::Output { .. } | Record::Finish { .. } | Record::Remove { .. } => Ok(()),
        }
    }
}

/// The state as it is to be stored: sensitive values encrypted with `key` (values already
/// encrypted are kept). Without a key, a never-encrypted state is returned unchanged and an
/// encrypted one must not gain cleartext sensitive values.
pub fn seal(state: &State, key: Option<&StateKey>, location: &str) -> Result<State, StateError> {
    let mut out = state.clone();
    let (sealing, header) = Sealing::new(key, out.encryption.as_ref(), location)?;
    out.encryption = header;
    for r in &mut out.resources {
        let paths = r.sensitive_paths.clone();
        sealing.paths(&mut r.attributes, &paths, &r.address, location)?;
    }
    for (name, o) in &mut out.outputs {
        if o.sensitive {
            sealing.value(&mut o.value, &format!("output {name}"), location)?;
        }
    }
    Ok(out)
}

/// The state with its sensitive values decrypted when `key` is given; without a key, encrypted
/// values stay as `(encrypted) ...` markers.
pub fn open(state: State, key: Option<&StateKey>, location: &str) -> Result<State, StateError> {
    let (Some(key), Some(header)) = (key, &state.encryption) else { return Ok(state) };
    let cipher = key.cipher_for(header, location)?;
    let mut state = state;
    for r in &mut state.resources {
        open_all(&mut r.attributes, &cipher, location)?;
    }
    for o in state.outputs.values_mut() {
        open_all(&mut o.value, &cipher, location)?;
    }
    Ok(state)
}

/// Encodes a state for a file outside any store (e.g. `errored.kdstate`), encrypting its
/// sensitive values when a key is given.
pub fn encode_sealed(state: &State, key: Option<&StateKey>) -> Result<Vec<u8>, StateError> {
    Ok(crate::file::encode(&seal(state, key, "the state being saved")?))
}

/// A store that encrypts sensitive values on the way in and decrypts them on the way out, over
/// any other store.
pub struct CryptStore {
    inner: Box<dyn StateStore>,
    key: Option<StateKey>,
    /// The encryption header of the last checkpoint: journal records are sealed with it, so
    /// that they replay over that state.
    journal_header: Option<EncryptionHeader>,
}

impl CryptStore {
    pub fn new(inner: Box<dyn StateStore>, key: Option<StateKey>) -> CryptStore {
        CryptStore { inner, key, journal_header: None }
    }

    pub fn key(&self) -> Option<&StateKey> {
        self.key.as_ref()
    }
}

impl StateStore for CryptStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn read(&mut self) -> Result<Option<State>, StateError> {
        let loc = self.inner.describe();
        match self.inner.read()? {
            Some(s) => Ok(Some(open(s, self.key.as_ref(), &loc)?)),
            None => Ok(None),
        }
    }
    fn read_stored(&mut self) -> Result<Option<State>, StateError> {
        self.inner.read_stored()
    }
    fn write(&mut self, state: &State) -> Result<(), StateError> {
        // Nothing to seal without a key and an unencrypted state: no copy of the whole state
        // per write (apply writes after every batch).
        if self.key.is_none() && state.encryption.is_none() {
            return self.inner.write(state);
        }
        let sealed = seal(state, self.key.as_ref(), &self.inner.describe())?;
        self.inner.write(&sealed)
    }
    fn checkpoint(&mut self, state: &State) -> Result<bool, StateError> {
        if self.key.is_none() && state.encryption.is_none() {
            self.journal_header = None;
            return self.inner.checkpoint(state);
        }
        let sealed = seal(state, self.key.as_ref(), &self.inner.describe())?;
        self.journal_header = sealed.encryption.clone();
        self.inner.checkpoint(&sealed)
    }
    /// Records are sealed as the checkpoint they follow was: with its header and the key, and
    /// without a key an encrypted state gains no cleartext.
    fn append(&mut self, serial: u64, records: &[Record]) -> Result<Append, StateError> {
        if self.key.is_none() && self.journal_header.is_none() {
            return self.inner.append(serial, records);
        }
        let location = self.inner.describe();
        let (sealing, _) = Sealing::new(self.key.as_ref(), self.journal_header.as_ref(), &location)?;
        let mut sealed = records.to_vec();
        for r in &mut sealed {
            sealing.record(r, &location)?;
        }
        self.inner.append(serial, &sealed)
    }
    fn force_write(&mut self, state: &State) -> Result<(), StateError> {
        if self.key.is_none() && state.encryption.is_none() {
            return self.inner.force_write(state);
        }
        let sealed = seal(state, self.key.as_ref(), &self.inner.describe())?;
        self.inner.force_write(&sealed)
    }
    fn lock(&mut self, info: LockInfo, timeout: Duration) -> Result<(), StateError> {
        self.inner.lock(info, timeout)
    }
    fn unlock(&mut self) -> Result<(), StateError> {
        self.inner.unlock()
    }
    fn lock_info(&mut self) -> Result<Option<LockInfo>, StateError> {
        self.inner.lock_info()
    }
    fn force_unlock(&mut self, id: &str) -> Result<(), StateError> {
        self.inner.force_unlock(id)
    }
    fn force_unlock_running(&mut self, id: &str) -> Result<(), StateError> {
        self.inner.force_unlock_running(id)
    }
    fn take_warnings(&mut self) -> Vec<String> {
        self.inner.take_warnings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OutputState, ResourceState};
    use serde_json::json;

    fn sample() -> State {
        let mut s = State::new("t");
        s.upsert(ResourceState {
            address: "vault.main".parse().unwrap(),
            kind: kdeploy_provider::Kind::Vault,
            type_name: "minio".into(),
            provider: "docker".into(),
            attributes: json!({"root_password": "hunter2", "env": {"A": {"x": 1}}, "name": "v"}),
            sensitive_paths: vec![AttrPath::attr("root_password"), AttrPath::attr("env").child_key("A")],
            dependencies: vec![],
            fingerprint: None,
            create_before_destroy: false,
        });
        s.outputs.insert("pw".into(), OutputState { value: json!("out-secret"), sensitive: true });
        s.outputs.insert("url".into(), OutputState { value: json!("http://x"), sensitive: false });
        s
    }

    #[test]
    fn round_trip_and_no_cleartext() {
        let key = StateKey::new("k1", "test");
        let s = sample();
        let sealed = seal(&s, Some(&key), "t").unwrap();
        let text = String::from_utf8(crate::file::encode(&sealed)).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("out-secret"), "{text}");
        assert!(text.contains("http://x") && text.contains("\"name\": \"v\""));
        let back = open(crate::file::decode(text.as_bytes(), "t").unwrap(), Some(&key), "t").unwrap();
        assert_eq!(back.resources, s.resources);
        assert_eq!(back.outputs, s.outputs);
        // Re-sealing reuses the header.
        let again = seal(&back, Some(&key), "t").unwrap();
        assert_eq!(again.encryption, sealed.encryption);
    }

    #[test]
    fn without_key_markers_are_kept_and_cleartext_refused() {
        let key = StateKey::new("k1", "test");
        let sealed = seal(&sample(), Some(&key), "t").unwrap();
        let read = open(sealed.clone(), None, "t").unwrap();
        assert!(is_encrypted(&read.resources[0].attributes["root_password"]));
        assert!(read.outputs["pw"].value.as_str().unwrap().starts_with("(encrypted)"));
        // Writing without the key keeps the ciphertext.
        let mut edited = read.clone();
        edited.outputs.insert("other".into(), OutputState { value: json!(1), sensitive: false });
        let resealed = seal(&edited, None, "t").unwrap();
        assert_eq!(resealed.resources, sealed.resources);
        let full = open(resealed, Some(&key), "t").unwrap();
        assert_eq!(full.resources[0].attributes["root_password"], "hunter2");
        // A new cleartext secret is refused.
        let mut bad = read;
        bad.resources[0].attributes["root_password"] = json!("new");
        assert!(matches!(seal(&bad, None, "t"), Err(StateError::Encryption { .. })));
    }

    #[test]
    fn wrong_key_is_reported() {
        let sealed = seal(&sample(), Some(&StateKey::new("k1", "test")), "t").unwrap();
        let err = open(sealed, Some(&StateKey::new("k2", "KDEPLOY_STATE_KEY")), "there").unwrap_err().to_string();
        assert!(err.contains("another key") && err.contains("KDEPLOY_STATE_KEY"), "{err}");
    }

    #[test]
    fn never_encrypted_state_without_key_is_unchanged() {
        let s = sample();
        assert_eq!(seal(&s, None, "t").unwrap(), s);
    }
}

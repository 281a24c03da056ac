//! API key values: generation, shape and checksum, and the keyed hash that is
//! the only thing the cluster ever stores.
//!
//! A generated key looks like `tg_<32 base62 chars><6 base62 checksum chars>`:
//! 190 bits of randomness, and a CRC32 checksum so that a mistyped or
//! truncated key is refused by the data plane before any lookup.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::validate::{Result, ValidationError};

pub const PREFIX: &str = "tg_";
const BODY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
pub const GENERATED_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
/// How many leading characters are kept for display.
pub const DISPLAY_PREFIX_LEN: usize = 10;
const IMPORT_MIN: usize = 20;
const IMPORT_MAX: usize = 128;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The checksum characters of a key body (base62, so ASCII).
fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A fresh key value. Shown to the caller once, then only its hash exists.
pub fn generate() -> String {
    let mut rng = rand::thread_rng();
    let body: String = (0..BODY_LEN)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    let sum = checksum(&body);
    format!(
        "{PREFIX}{body}{}",
        std::str::from_utf8(&sum).expect("base62 is ascii")
    )
}

/// Why a presented key was refused before lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("key has the wrong length or characters")]
    Shape,
    #[error("key checksum does not match")]
    Checksum,
}

/// Cheap check of a presented key: shape, and checksum for `tg_` keys.
pub fn check_shape(value: &str) -> std::result::Result<(), ShapeError> {
    if let Some(rest) = value.strip_prefix(PREFIX) {
        if value.len() != GENERATED_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ShapeError::Shape);
        }
        let (body, sum) = rest.split_at(BODY_LEN);
        return if checksum(body) == sum.as_bytes() {
            Ok(())
        } else {
            Err(ShapeError::Checksum)
        };
    }
    let printable = value.bytes().all(|b| b.is_ascii_graphic());
    if (IMPORT_MIN..=IMPORT_MAX).contains(&value.len()) && printable {
        Ok(())
    } else {
        Err(ShapeError::Shape)
    }
}

/// An imported key value (`POST /v1/keys` with `value`).
pub fn validate_import(field: &str, value: &str) -> Result {
    check_shape(value).map_err(|e| {
        ValidationError::new(
            field,
            match e {
                ShapeError::Shape => {
                    "must be 20 to 128 printable ASCII characters without spaces".to_string()
                }
                ShapeError::Checksum => {
                    "starts with tg_ but is not a valid generated key".to_string()
                }
            },
        )
    })
}

pub fn display_prefix(value: &str) -> String {
    value.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// Keyed hash (HMAC-SHA256, hex) of a key value.
pub fn hash(secret_hex: &str, value: &str) -> String {
    KeyHasher::new(secret_hex).hash(value)
}

/// The keyed hash as bytes.
pub type KeyDigest = [u8; 32];

/// The digest a stored hash spells, if it is in the form `hash` writes
/// (64 lowercase hex digits): any other form matches no presented key.
pub fn parse_hash(hash: &str) -> Option<KeyDigest> {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if hash.len() != 64 || !hash.bytes().all(lower_hex) {
        return None;
    }
    let mut out = [0; 32];
    hex::decode_to_slice(hash, &mut out).ok()?;
    Some(out)
}

/// The keyed hash with its secret already absorbed: the HMAC's padded-key
/// blocks are hashed once here, not on every request.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl KeyHasher {
    pub fn new(secret_hex: &str) -> Self {
        let secret = hex::decode(secret_hex).unwrap_or_else(|_| secret_hex.as_bytes().to_vec());
        Self {
            mac: Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC takes any key length"),
        }
    }

    /// The keyed hash of `value`, as the hex the cluster stores.
    pub fn hash(&self, value: &str) -> String {
        hex::encode(self.digest(value))
    }

    /// The keyed hash of `value` as bytes: what a presented key is looked
    /// up by, with no hex string made per request.
    pub fn digest(&self, value: &str) -> KeyDigest {
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)") // never the secret
    }
}

/// Compare two secrets or hashes without leaking where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Compare two digests without leaking where they differ. By 64-bit
/// words: as constant-time as by bytes, with an eighth of the optimization
/// barriers (one per `ct_eq`).
pub fn digests_equal(a: &KeyDigest, b: &KeyDigest) -> bool {
    let words = |d: &KeyDigest| -> [u64; 4] {
        std::array::from_fn(|i| {
            u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    };
    bool::from(words(a)[..].ct_eq(&words(b)[..]))
}

/// A new random secret for the keyed hash, hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// A new random id with a readable prefix, e.g. `key-3f9a…`.
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 8] = rand::thread_rng().gen();
    format!("{prefix}-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_pass_and_typos_fail() {
        let k = generate();
        assert_eq!(k.len(), GENERATED_LEN);
        assert!(k.starts_with("tg_"));
        check_shape(&k).unwrap();
        // Change one character of the body.
        let mut bytes = k.clone().into_bytes();
        bytes[5] = if bytes[5] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(check_shape(&typo), Err(ShapeError::Checksum));
        assert_eq!(check_shape(&k[..k.len() - 1]), Err(ShapeError::Shape));
        assert_ne!(generate(), generate());
    }

    #[test]
    fn imports_and_hashes() {
        assert!(validate_import("value", "short").is_err());
        assert!(validate_import("value", "a-legacy-key-of-enough-length").is_ok());
        assert!(validate_import("value", "tg_not-a-real-generated-key-1234").is_err());
        let s = new_secret();
        let h = hash(&s, "abc");
        assert_eq!(h.len(), 64);
        let d = parse_hash(&h).unwrap();
        assert_eq!(d, KeyHasher::new(&s).digest("abc"));
        assert!(digests_equal(&d, &KeyHasher::new(&s).digest("abc")));
        assert!(!digests_equal(&d, &KeyHasher::new(&s).digest("abd")));
        assert_eq!(parse_hash(&h.to_uppercase()), None);
        assert_eq!(parse_hash(&h[1..]), None);
        assert!(constant_time_eq(&h, &hash(&s, "abc")));
        assert!(!constant_time_eq(&h, &hash(&new_secret(), "abc")));
    }
}

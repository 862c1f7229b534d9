//! The one-way forms of secrets the config holds: argon2 PHC strings for
//! passwords, SHA-256 hex for bearer tokens.

use argon2::{Argon2, PasswordHasher};
use sha2::{Digest, Sha256};

/// A SHA-256 digest: how a bearer token is stored and looked up.
pub(crate) type Digest256 = [u8; 32];

/// Hashes `password` with argon2id at the crate's default parameters and a
/// random salt, as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`): the
/// value of a user's `password` key.
///
/// # Panics
///
/// If the system's random source fails, which leaves nothing to salt with.
pub fn hash_password(password: &[u8]) -> String {
    Argon2::default()
        .hash_password(password)
        .expect("argon2 with default parameters hashes any password given a salt")
        .to_string()
}

/// The SHA-256 of `token` in lower-case hex: the value of a user's
/// `token_sha256` key.
pub fn hash_token(token: &[u8]) -> String {
    to_hex(&sha256(token))
}

/// The SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> Digest256 {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// A SHA-256 digest from its 64 hex digits (either case); `None` for
/// anything else.
pub(crate) fn digest_from_hex(text: &str) -> Option<Digest256> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_are_sha256_hex_and_read_back() {
        let hex = hash_token(b"abc");
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(digest_from_hex(&hex), Some(sha256(b"abc")));
        assert_eq!(digest_from_hex(&hex.to_uppercase()), Some(sha256(b"abc")));
        assert_eq!(digest_from_hex(&hex[1..]), None, "63 digits");
        assert_eq!(digest_from_hex(&format!("g{}", &hex[1..])), None, "not hex");
        assert_eq!(digest_from_hex(&format!("+{}", &hex[1..])), None, "a sign is not a digit");
    }

    #[test]
    fn password_hashes_are_argon2id_phc_strings_with_fresh_salts() {
        let a = hash_password(b"hunter2");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, hash_password(b"hunter2"), "a random salt each time");
    }
}

//! Password checks: the argon2 verification, which takes tens of
//! milliseconds, packed as a job the caller runs off the cores.

use std::{fmt, net::IpAddr, sync::Arc};

use argon2::{Argon2, Params, PasswordHash, PasswordVerifier};
use zeroize::Zeroizing;

use super::{failure::AuthFailure, identity::Identity, throttle::Guard};

/// The hash unknown users are checked against when no user has a password
/// to copy parameters from: argon2id at the crate's default parameters. No
/// password hashes to its output (it is not the output of a hash).
const DEFAULT_DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$Y29yZWNhc3QtZHVtbXk$\
                             AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Reads a user's `password` key: an argon2 hash in PHC form, with its
/// salt and output. The error says what is wrong, not the string.
pub(crate) fn parse_phc(text: &str) -> Result<PasswordHash, String> {
    let hash = PasswordHash::new(text).map_err(|e| format!("not a PHC string ({e})"))?;
    argon2::Algorithm::try_from(hash.algorithm.as_str())
        .map_err(|_| format!("{} is not an argon2 hash", hash.algorithm))?;
    Params::try_from(&hash).map_err(|e| format!("bad argon2 parameters ({e})"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("the PHC string has no salt or no hash".into());
    }
    Ok(hash)
}

/// A hash no password matches, with the parameters of `typical` (one of
/// the configured users' hashes) so that checking an unknown user costs
/// what checking a known one does.
pub(crate) fn dummy_like(typical: Option<&PasswordHash>) -> PasswordHash {
    let Some(typical) = typical else {
        return parse_phc(DEFAULT_DUMMY).expect("the default dummy is a valid PHC string");
    };
    let mut dummy = typical.clone();
    if let Some(output) = &typical.hash {
        let flipped: Vec<u8> = output.as_bytes().iter().map(|b| !b).collect();
        dummy.hash = argon2::password_hash::phc::Output::new(&flipped).ok();
    }
    dummy
}

/// A password check to run on a thread that may block (argon2 takes tens
/// of milliseconds): it owns everything it needs, and wipes its copy of
/// the password when dropped.
pub struct PasswordJob {
    /// The user's hash, or the dummy for an unknown user (same cost).
    pub(crate) hash: Arc<PasswordHash>,
    /// The password as presented; zeroed on drop.
    pub(crate) password: Zeroizing<Vec<u8>>,
    /// What a match yields: the user's identity, or the failure already
    /// decided (unknown user, a user without a password), which is
    /// returned only after the same work as a real check.
    pub(crate) claimed: Result<Identity, AuthFailure>,
    /// The check's place in its source's throttle bucket, ended when the
    /// job runs, or when it is dropped unrun (a full queue).
    pub(crate) check: Check,
}

/// A check under way from one source, for the throttle: ended exactly
/// once.
#[derive(Debug)]
pub(crate) struct Check {
    /// The authenticator's throttle and counters, which outlive a reload
    /// for jobs still running.
    pub(crate) guard: Arc<Guard>,
    pub(crate) peer: IpAddr,
    pub(crate) now_unix_secs: u64,
    pub(crate) ended: bool,
}

impl Check {
    fn end(&mut self, failed: bool) {
        if !self.ended {
            self.ended = true;
            self.guard.end_check(self.peer, self.now_unix_secs, failed, true);
        }
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl PasswordJob {
    /// Runs argon2 (blocking, tens of milliseconds) and returns the
    /// identity, or the failure, which it has counted against the peer.
    pub fn run(self) -> Result<Identity, AuthFailure> {
        let matches = Argon2::default().verify_password(&self.password, &*self.hash).is_ok();
        let outcome = match self.claimed {
            Ok(identity) if matches => Ok(identity),
            Ok(_) => Err(AuthFailure::WrongSecret),
            Err(failure) => Err(failure),
        };
        let mut check = self.check;
        check.end(outcome.is_err());
        outcome
    }
}

impl fmt::Debug for PasswordJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordJob")
            .field("user", &self.claimed.as_ref().ok().and_then(Identity::user))
            .field("peer", &self.check.peer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use argon2::{Algorithm, PasswordHasher, Version};

    use super::*;

    /// A PHC hash at small parameters (256 KiB, one pass), fast in tests.
    pub(crate) fn cheap_hash(password: &[u8]) -> String {
        let params = Params::new(256, 1, 1, None).expect("valid parameters");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password)
            .expect("hashed")
            .to_string()
    }

    #[test]
    fn phc_strings_are_checked() {
        assert!(parse_phc(&cheap_hash(b"pw")).is_ok());
        assert!(parse_phc(&crate::auth::hash_password(b"pw")).is_ok());
        let err = parse_phc("hunter2").expect_err("not PHC");
        assert!(err.starts_with("not a PHC string"), "{err}");
        let err = parse_phc("$pbkdf2-sha256$i=1000$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA")
            .expect_err("not argon2");
        assert!(err.contains("not an argon2 hash"), "{err}");
        let err = parse_phc("$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
            .expect_err("m");
        assert!(err.contains("bad argon2 parameters"), "{err}");
        assert!(parse_phc("$argon2id$v=19$m=256,t=1,p=1").is_err(), "no salt");
    }

    #[test]
    fn no_password_matches_a_dummy() {
        let typical = parse_phc(&cheap_hash(b"pw")).expect("valid");
        let dummy = dummy_like(Some(&typical));
        assert_eq!(dummy.params, typical.params, "same cost");
        assert_eq!(dummy.salt, typical.salt);
        let argon2 = Argon2::default();
        assert!(argon2.verify_password(b"pw", &typical).is_ok());
        assert!(argon2.verify_password(b"pw", &dummy).is_err());
        let default = dummy_like(None);
        let params = Params::try_from(&default).expect("params");
        let default_params = Params::default();
        assert_eq!(params.m_cost(), default_params.m_cost());
        assert_eq!((params.t_cost(), params.p_cost()), (default_params.t_cost(), 1));
    }
}

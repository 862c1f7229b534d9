//! JWTs presented in `HELLO`: the configured keys, the signature check and
//! the claims the broker reads.
//!
//! The key is chosen by the configured algorithms, never by the token
//! alone: a token is accepted only if its `alg` is one whose key is
//! configured, and is verified with that key. So an HS256 token "signed"
//! with the RSA public key (which everybody has) finds no HS256 key, or
//! the real HS256 secret, and fails; `alg: none` is no algorithm at all.
//! Time is the caller's: the library's own clock checks are off, and `exp`
//! and `nbf` are checked here against the `now` given.

use std::{collections::HashSet, path::Path};

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{
    config::{AllowResponses, JwtConfig, Permissions, Rules},
    failure::AuthFailure,
};
use crate::config::ConfigError;

/// Longest JWT accepted; a longer one is refused before it is parsed.
pub(crate) const MAX_JWT_LEN: usize = 8 << 10;

/// The keys of `[jwt]` and the checks on the claims.
pub(crate) struct JwtVerifier {
    /// The accepted algorithms, each with its key: HS256 with the secret,
    /// RS256 with the RSA public key, EdDSA with the Ed25519 key.
    keys: Vec<(Algorithm, DecodingKey)>,
    /// `iss` and `aud` to require, if configured.
    issuer: Option<String>,
    audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, ms.
    leeway_ms: u64,
    /// Whether `sub` must name a configured user.
    pub(crate) require_known_user: bool,
}

/// What a verified token says.
#[derive(Debug)]
pub(crate) struct Verified {
    /// `sub`: the user name.
    pub(crate) sub: String,
    /// `exp`, seconds since the Unix epoch.
    pub(crate) exp: u64,
    /// The `corecast` claim, if the token has one.
    pub(crate) permissions: Option<Permissions>,
}

/// The claims read from a token; the others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    corecast: Option<ClaimPermissions>,
}

/// A JWT time: seconds since the Unix epoch, an integer or not.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum NumericDate {
    Whole(u64),
    Fraction(f64),
}

impl NumericDate {
    /// Whole milliseconds; `None` for a negative or non-finite time.
    fn millis(self) -> Option<u64> {
        match self {
            Self::Whole(secs) => Some(secs.saturating_mul(1000)),
            Self::Fraction(secs) if secs.is_finite() && secs >= 0.0 => Some((secs * 1000.0) as u64),
            Self::Fraction(_) => None,
        }
    }
}

/// The `corecast` claim: the permissions of a subject that is not a
/// configured user, in the token itself (only trusted because the token's
/// signature is). Every key may be left out:
///
/// ```json
/// "corecast": {
///   "pub": { "allow": ["orders.>"], "deny": ["orders.admin"] },
///   "sub": { "allow": ["replies.*"], "deny": [] },
///   "allow_responses": { "max": 1, "window": "60s" }
/// }
/// ```
///
/// `pub` and `sub` are the publish and subscribe [`Rules`] (no `allow` =
/// everything not denied), `allow_responses` is [`AllowResponses`]
/// (`window` a duration with its unit, or milliseconds). Unknown keys are
/// refused, so a misspelt rule does not silently allow everything.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClaimPermissions {
    #[serde(rename = "pub")]
    publish: Rules,
    #[serde(rename = "sub")]
    subscribe: Rules,
    allow_responses: Option<AllowResponses>,
}

impl From<ClaimPermissions> for Permissions {
    fn from(claim: ClaimPermissions) -> Self {
        Self {
            publish: claim.publish,
            subscribe: claim.subscribe,
            allow_responses: claim.allow_responses,
        }
    }
}

impl JwtVerifier {
    /// Reads the key files of `cfg`; at least one must be given.
    pub(crate) fn new(cfg: &JwtConfig) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        if let Some(path) = &cfg.hs256_secret_file {
            keys.push((Algorithm::HS256, hs256_key(path)?));
        }
        if let Some(path) = &cfg.rs256_public_key_file {
            let key = pem_key(path, "rs256_public_key_file", DecodingKey::from_rsa_pem)?;
            keys.push((Algorithm::RS256, key));
        }
        if let Some(path) = &cfg.eddsa_public_key_file {
            let key = pem_key(path, "eddsa_public_key_file", DecodingKey::from_ed_pem)?;
            keys.push((Algorithm::EdDSA, key));
        }
        if keys.is_empty() {
            return Err(ConfigError::Invalid("[jwt] names no key file".into()));
        }
        Ok(Self {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_ms: cfg.leeway_ms,
            require_known_user: cfg.require_known_user,
        })
    }

    /// Verifies `token`'s size, algorithm, signature and claims at `now`
    /// (seconds since the Unix epoch).
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<Verified, AuthFailure> {
        if token.len() > MAX_JWT_LEN {
            return Err(AuthFailure::BadToken(format!("longer than {MAX_JWT_LEN} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad_header(&e))?;
        let Some((alg, key)) = self.keys.iter().find(|(alg, _)| *alg == header.alg) else {
            return Err(AuthFailure::NotAllowed(format!("alg {:?} has no key", header.alg)));
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation(*alg))
            .map_err(|e| failure(&e))?
            .claims;
        self.check_times(&claims, now)?;
        Ok(Verified {
            sub: claims.sub.ok_or_else(|| missing("sub"))?,
            exp: claims.exp.and_then(NumericDate::millis).map_or(0, |ms| ms / 1000),
            permissions: claims.corecast.map(Permissions::from),
        })
    }

    /// The library's checks for `alg`: signature, `iss` and `aud` when
    /// configured (and then required); not the times, which need a clock.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = HashSet::new();
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        validation
    }

    /// `exp` (required) has not passed and `nbf` (if any) has come, at
    /// `now` give or take the leeway.
    fn check_times(&self, claims: &Claims, now: u64) -> Result<(), AuthFailure> {
        let now_ms = now.saturating_mul(1000);
        let exp = claims.exp.ok_or_else(|| missing("exp"))?;
        let exp_ms = exp.millis().ok_or_else(|| malformed("exp"))?;
        if now_ms >= exp_ms.saturating_add(self.leeway_ms) {
            return Err(AuthFailure::Expired);
        }
        if let Some(nbf) = claims.nbf {
            let nbf_ms = nbf.millis().ok_or_else(|| malformed("nbf"))?;
            if now_ms.saturating_add(self.leeway_ms) < nbf_ms {
                return Err(AuthFailure::NotYetValid);
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithms: Vec<Algorithm> = self.keys.iter().map(|(alg, _)| *alg).collect();
        f.debug_struct("JwtVerifier")
            .field("algorithms", &algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_ms", &self.leeway_ms)
            .field("require_known_user", &self.require_known_user)
            .finish()
    }
}

/// The HS256 secret: the file's bytes, trailing newlines removed.
fn hs256_key(path: &Path) -> Result<DecodingKey, ConfigError> {
    let bytes = read_key(path, "hs256_secret_file")?;
    let end = bytes.iter().rposition(|b| !matches!(b, b'\n' | b'\r')).map_or(0, |i| i + 1);
    if end == 0 {
        return Err(key_error("hs256_secret_file", path, "the secret is empty"));
    }
    DecodingKey::from_secret(&bytes[..end])
        .map_err(|e| key_error("hs256_secret_file", path, &e.to_string()))
}

/// A public key in a PEM file, read by `parse`.
fn pem_key(
    path: &Path,
    what: &str,
    parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
) -> Result<DecodingKey, ConfigError> {
    let bytes = read_key(path, what)?;
    parse(&bytes).map_err(|e| key_error(what, path, &e.to_string()))
}

fn read_key(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| key_error(what, path, &e.to_string()))
}

fn key_error(what: &str, path: &Path, why: &str) -> ConfigError {
    ConfigError::Invalid(format!("[jwt] {what} {}: {why}", path.display()))
}

/// A header that does not parse, `alg: none` included (no such algorithm).
fn bad_header(error: &jsonwebtoken::errors::Error) -> AuthFailure {
    AuthFailure::BadToken(format!("header: {error}"))
}

fn missing(claim: &str) -> AuthFailure {
    AuthFailure::BadToken(format!("no {claim} claim"))
}

fn malformed(claim: &str) -> AuthFailure {
    AuthFailure::BadToken(format!("malformed {claim} claim"))
}

/// The failure a library error stands for.
fn failure(error: &jsonwebtoken::errors::Error) -> AuthFailure {
    match error.kind() {
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::InvalidAlgorithm => AuthFailure::NotAllowed("algorithm".into()),
        ErrorKind::InvalidIssuer => AuthFailure::BadToken("wrong iss".into()),
        ErrorKind::InvalidAudience => AuthFailure::BadToken("wrong aud".into()),
        ErrorKind::MissingRequiredClaim(claim) => missing(claim),
        ErrorKind::InvalidClaimFormat(claim) => malformed(claim),
        _ => AuthFailure::BadToken(error.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    /// The tests' clock.
    pub(crate) const NOW: u64 = 1_800_000_000;

    /// A test key under `tests/data/auth/`.
    pub(crate) fn key_file(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/auth").join(name)
    }

    /// A new file holding `bytes`, in a directory of this test process
    /// (a new one each call: tests run at once).
    pub(crate) fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("corecast-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{n}-{name}"));
        std::fs::write(&path, bytes).expect("written");
        path
    }

    pub(crate) const HS256_SECRET: &[u8] = b"a test secret of thirty-two bytes!";

    /// `[jwt]` with the HS256 secret (written to a file), the RS256 and
    /// EdDSA test keys as asked, and a one-second leeway.
    pub(crate) fn jwt_config(hs256: bool, rs256: bool, eddsa: bool) -> JwtConfig {
        let mut secret = HS256_SECRET.to_vec();
        secret.push(b'\n');
        JwtConfig {
            hs256_secret_file: hs256.then(|| temp_file("hs256.secret", &secret)),
            rs256_public_key_file: rs256.then(|| key_file("rs256-public.pem")),
            eddsa_public_key_file: eddsa.then(|| key_file("eddsa-public.pem")),
            leeway_ms: 1000,
            ..JwtConfig::default()
        }
    }

    /// `claims` signed with `alg` and `key`.
    pub(crate) fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).expect("signed")
    }

    /// An HS256 key from `secret`.
    pub(crate) fn hmac(secret: &[u8]) -> EncodingKey {
        EncodingKey::from_secret(secret).expect("any secret is an HMAC key")
    }

    pub(crate) fn hs256(claims: &serde_json::Value) -> String {
        sign(Algorithm::HS256, &hmac(HS256_SECRET), claims)
    }

    pub(crate) fn rs256(claims: &serde_json::Value) -> String {
        let pem = std::fs::read(key_file("rs256-private.pem")).expect("test key");
        sign(Algorithm::RS256, &EncodingKey::from_rsa_pem(&pem).expect("RSA key"), claims)
    }

    pub(crate) fn eddsa(claims: &serde_json::Value) -> String {
        let pem = std::fs::read(key_file("eddsa-private.pem")).expect("test key");
        sign(Algorithm::EdDSA, &EncodingKey::from_ed_pem(&pem).expect("Ed25519 key"), claims)
    }

    fn verifier(cfg: &JwtConfig) -> JwtVerifier {
        JwtVerifier::new(cfg).expect("valid [jwt]")
    }

    fn all_keys() -> JwtVerifier {
        verifier(&jwt_config(true, true, true))
    }

    #[test]
    fn each_configured_algorithm_verifies_with_its_key() {
        let claims = json!({ "sub": "alice", "exp": NOW + 60 });
        let v = all_keys();
        for token in [hs256(&claims), rs256(&claims), eddsa(&claims)] {
            let verified = v.verify(&token, NOW).expect("valid");
            assert_eq!((verified.sub.as_str(), verified.exp), ("alice", NOW + 60));
            assert!(verified.permissions.is_none());
        }
    }

    #[test]
    fn only_algorithms_with_a_configured_key_are_accepted() {
        let claims = json!({ "sub": "alice", "exp": NOW + 60 });
        let only_rsa = verifier(&jwt_config(false, true, false));
        assert!(only_rsa.verify(&rs256(&claims), NOW).is_ok());
        for token in [hs256(&claims), eddsa(&claims)] {
            let err = only_rsa.verify(&token, NOW).expect_err("no key for the alg");
            assert!(matches!(err, AuthFailure::NotAllowed(_)), "{err:?}");
        }
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let public = std::fs::read(key_file("rs256-public.pem")).expect("test key");
        let claims = json!({ "sub": "alice", "exp": NOW + 60 });
        let forged = sign(Algorithm::HS256, &hmac(&public), &claims);
        let err = verifier(&jwt_config(false, true, false)).verify(&forged, NOW);
        assert!(matches!(err, Err(AuthFailure::NotAllowed(_))), "{err:?}");
        let err = all_keys().verify(&forged, NOW);
        assert_eq!(err.expect_err("checked with the HS256 secret"), AuthFailure::BadSignature);
    }

    #[test]
    fn a_wrong_key_is_a_bad_signature() {
        let claims = json!({ "sub": "alice", "exp": NOW + 60 });
        let other = sign(Algorithm::HS256, &hmac(b"another secret"), &claims);
        assert_eq!(all_keys().verify(&other, NOW).expect_err("forged"), AuthFailure::BadSignature);
        let mut tampered = hs256(&claims);
        tampered.pop();
        assert!(all_keys().verify(&tampered, NOW).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        // {"alg":"none","typ":"JWT"} and {"sub":"alice","exp":...}, unsigned.
        let payload = hs256(&json!({ "sub": "alice", "exp": NOW + 60 }));
        let body = payload.split('.').nth(1).expect("three parts");
        for token in [
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}."),
            format!("eyJhbGciOiJub25lIn0.{body}."),
        ] {
            let err = all_keys().verify(&token, NOW).expect_err("unsigned");
            assert!(
                matches!(err, AuthFailure::BadToken(_) | AuthFailure::NotAllowed(_)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn exp_is_required_and_checked_with_the_leeway() {
        let v = all_keys();
        let missing = v.verify(&hs256(&json!({ "sub": "alice" })), NOW);
        assert_eq!(missing.expect_err("no exp"), AuthFailure::BadToken("no exp claim".into()));
        let past = hs256(&json!({ "sub": "alice", "exp": NOW - 5 }));
        assert_eq!(v.verify(&past, NOW).expect_err("expired"), AuthFailure::Expired);
        let just = hs256(&json!({ "sub": "alice", "exp": NOW }));
        assert!(v.verify(&just, NOW).is_ok(), "within the one-second leeway");
        assert_eq!(v.verify(&just, NOW + 1).expect_err("leeway spent"), AuthFailure::Expired);
        let fraction = hs256(&json!({ "sub": "alice", "exp": (NOW + 10) as f64 + 0.5 }));
        assert!(v.verify(&fraction, NOW).is_ok());
        let negative = hs256(&json!({ "sub": "alice", "exp": -1 }));
        assert!(v.verify(&negative, NOW).is_err());
    }

    #[test]
    fn nbf_is_checked_when_present() {
        let v = all_keys();
        let early = hs256(&json!({ "sub": "alice", "exp": NOW + 60, "nbf": NOW + 30 }));
        assert_eq!(v.verify(&early, NOW).expect_err("too early"), AuthFailure::NotYetValid);
        assert!(v.verify(&early, NOW + 29).is_ok(), "within the leeway");
        assert!(v.verify(&early, NOW + 30).is_ok());
    }

    #[test]
    fn sub_is_required() {
        let err = all_keys().verify(&hs256(&json!({ "exp": NOW + 60 })), NOW);
        assert_eq!(err.expect_err("no sub"), AuthFailure::BadToken("no sub claim".into()));
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let cfg = JwtConfig {
            issuer: Some("auth.example".into()),
            audience: Some("corecast".into()),
            ..jwt_config(true, false, false)
        };
        let v = verifier(&cfg);
        let good = json!({ "sub": "a", "exp": NOW + 60, "iss": "auth.example", "aud": "corecast" });
        assert!(v.verify(&hs256(&good), NOW).is_ok());
        let listed = json!({ "sub": "a", "exp": NOW + 60, "iss": "auth.example",
                             "aud": ["other", "corecast"] });
        assert!(v.verify(&hs256(&listed), NOW).is_ok());
        for claims in [
            json!({ "sub": "a", "exp": NOW + 60, "iss": "evil", "aud": "corecast" }),
            json!({ "sub": "a", "exp": NOW + 60, "iss": "auth.example", "aud": "other" }),
            json!({ "sub": "a", "exp": NOW + 60, "aud": "corecast" }),
            json!({ "sub": "a", "exp": NOW + 60, "iss": "auth.example" }),
        ] {
            let err = v.verify(&hs256(&claims), NOW).expect_err("refused");
            assert!(matches!(err, AuthFailure::BadToken(_)), "{claims}: {err:?}");
        }
        let any_aud = json!({ "sub": "a", "exp": NOW + 60, "aud": "whatever" });
        assert!(all_keys().verify(&hs256(&any_aud), NOW).is_ok(), "no audience configured");
    }

    #[test]
    fn the_corecast_claim_reads_as_permissions() {
        let claims = json!({ "sub": "svc", "exp": NOW + 60, "corecast": {
            "pub": { "allow": ["orders.>"], "deny": ["orders.admin"] },
            "sub": { "deny": ["secret.>"] },
            "allow_responses": { "max": 3, "window": "2s" },
        }});
        let verified = all_keys().verify(&hs256(&claims), NOW).expect("valid");
        let expected = Permissions {
            publish: Rules {
                allow: Some(vec!["orders.>".into()]),
                deny: vec!["orders.admin".into()],
            },
            subscribe: Rules { allow: None, deny: vec!["secret.>".into()] },
            allow_responses: Some(AllowResponses { max: 3, window_ms: 2000 }),
        };
        assert_eq!(verified.permissions, Some(expected));
        let misspelt = json!({ "sub": "svc", "exp": NOW + 60, "corecast": { "publish": {} } });
        let err = all_keys().verify(&hs256(&misspelt), NOW).expect_err("unknown key");
        assert!(matches!(err, AuthFailure::BadToken(_)), "{err:?}");
    }

    #[test]
    fn oversized_tokens_are_refused_before_parsing() {
        let padding = "x".repeat(MAX_JWT_LEN);
        let token = hs256(&json!({ "sub": "alice", "exp": NOW + 60, "pad": padding }));
        let err = all_keys().verify(&token, NOW).expect_err("too long");
        assert_eq!(err, AuthFailure::BadToken(format!("longer than {MAX_JWT_LEN} bytes")));
        let garbage = "!".repeat(MAX_JWT_LEN + 1);
        assert_eq!(all_keys().verify(&garbage, NOW).expect_err("too long"), err);
    }

    #[test]
    fn key_files_are_checked_and_named() {
        let err = |cfg: JwtConfig| JwtVerifier::new(&cfg).expect_err("invalid").to_string();
        let missing = JwtConfig {
            rs256_public_key_file: Some("/nonexistent/rs.pem".into()),
            ..JwtConfig::default()
        };
        let text = err(missing);
        assert!(text.contains("rs256_public_key_file /nonexistent/rs.pem"), "{text}");
        let not_pem = JwtConfig {
            eddsa_public_key_file: Some(temp_file("not.pem", b"hello")),
            ..JwtConfig::default()
        };
        assert!(err(not_pem).contains("eddsa_public_key_file"));
        let empty = JwtConfig {
            hs256_secret_file: Some(temp_file("empty.secret", b"\n")),
            ..JwtConfig::default()
        };
        assert!(err(empty).contains("the secret is empty"));
        assert!(err(JwtConfig::default()).contains("no key file"));
    }
}

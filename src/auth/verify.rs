//! The checks of a `HELLO`'s credential: built once per configuration,
//! shared by the cores, pure (no I/O, no clock: the caller gives `now`).

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, PoisonError,
    },
};

use argon2::PasswordHash;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{
    config::{Permissions, UserLimits},
    failure::AuthFailure,
    fnv64,
    hash::{sha256, Digest256},
    identity::{CredentialKind, Identity},
    jwt::JwtVerifier,
    password::{dummy_like, Check, PasswordJob},
    permissions::Compiled,
    throttle::{Admission, Guard},
    users::{RuleCache, Users},
};
use crate::config::{Config, ConfigError};

/// What a client presented in `HELLO`.
#[derive(Clone, Copy)]
pub enum Presented<'a> {
    /// `HELLO` without the credential flag: the token field as it is
    /// (empty = none). Matches `auth_token` (constant time), else the
    /// SHA-256 of it against users' `token_sha256`, so that version 1
    /// clients can use a user's bearer token too.
    Token(&'a [u8]),
    /// A user name and password.
    Password {
        /// The user's name.
        user: &'a str,
        /// The password, as sent.
        password: &'a [u8],
    },
    /// A bearer token: a user's (or the legacy `auth_token`).
    Bearer(&'a [u8]),
    /// A JWT in its compact form.
    Jwt(&'a str),
    /// The credential flag was set but the field did not parse.
    Malformed,
}

impl fmt::Debug for Presented<'_> {
    /// Names the kind (and a password's user), never a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token([]) => f.write_str("Token(none)"),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
            Self::Bearer(_) => f.write_str("Bearer(..)"),
            Self::Jwt(_) => f.write_str("Jwt(..)"),
            Self::Malformed => f.write_str("Malformed"),
        }
    }
}

/// The outcome of the first step of a `HELLO`.
#[derive(Debug)]
#[must_use = "a password job must be run, and its outcome answered"]
pub enum Begin {
    /// Decided: the identity, or why not.
    Done(Result<Identity, AuthFailure>),
    /// A password to verify: run the job on a thread that may block, then
    /// answer with its outcome.
    Verify(PasswordJob),
    /// The client's address has as many checks under way as it may: ask
    /// again shortly (the `HELLO` waits; nothing was checked).
    Later,
}

/// Users, hashes, keys and permissions of one configuration, compiled.
/// `Send + Sync`: built once per config (and again on each reload) and
/// shared by all cores in an `Arc`.
pub struct Authenticator {
    users: Users,
    /// The SHA-256 of the legacy `auth_token`: compared digest to digest,
    /// in constant time, so neither its bytes nor its length leak.
    legacy_token: Option<Digest256>,
    /// `default_permissions` compiled (or allow-all): for the legacy token,
    /// users without rules, JWT subjects without the `corecast` claim.
    default_permissions: Arc<Compiled>,
    /// Everyone's rules when nothing is configured.
    allow_all: Arc<Compiled>,
    /// `[jwt]`'s keys, if configured.
    jwt: Option<JwtVerifier>,
    /// What an unknown user's password is checked against, so that it
    /// takes as long as a known user's.
    dummy_hash: Arc<PasswordHash>,
    /// The throttle and the counters, shared with the password jobs.
    guard: Arc<Guard>,
    /// A digest of the `[jwt]` settings and key files: a session logged in
    /// with a JWT stands while it is unchanged.
    jwt_keys: u64,
    /// Tells this authenticator from the one before a reload, for a
    /// password check that finishes across it.
    generation: u64,
    /// The rules of JWT `corecast` claims, compiled once per distinct
    /// claim, so that sessions with the same claim share them (and their
    /// cached answers); at most [`CLAIMS`], then it starts over.
    claims: std::sync::Mutex<HashMap<String, Arc<Compiled>>>,
}

/// Distinct claim rules kept compiled.
const CLAIMS: usize = 1024;

impl Authenticator {
    /// Compiles the users, hashes, keys (reads the key files) and
    /// permissions of `cfg`. [`ConfigError::Invalid`], naming the user, key
    /// or file, for a bad PHC string or hex digest, a duplicate user name,
    /// `tls_subject` or token, an unreadable or invalid key file, or a user
    /// with no credential (a user may have none of its own only when
    /// `[jwt]` is configured: JWTs name it).
    pub fn new(cfg: &Config) -> Result<Self, ConfigError> {
        let mut rules = RuleCache::new(cfg.default_permissions.as_ref())?;
        let jwt = cfg.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        let users = Users::new(&cfg.users, &mut rules, jwt.is_some())?;
        let legacy_token = cfg.auth_token.as_deref().map(|t| sha256(t.as_bytes()));
        if legacy_token.is_some_and(|digest| users.has_token(&digest)) {
            let why = "a user's token_sha256 is the SHA-256 of auth_token";
            return Err(ConfigError::Invalid(why.into()));
        }
        let typical = users.iter().find_map(|u| u.password.as_deref());
        warn_of_mixed_costs(&users);
        Ok(Self {
            dummy_hash: Arc::new(dummy_like(typical)),
            users,
            legacy_token,
            default_permissions: rules.default,
            allow_all: Arc::new(Compiled::allow_all()),
            jwt,
            guard: Arc::new(Guard::default()),
            jwt_keys: cfg.jwt.as_ref().map_or(0, jwt_fingerprint),
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            claims: std::sync::Mutex::default(),
        })
    }

    /// Tells this authenticator from the ones before and after it.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// What vouches for a session of `user` that proved itself by `kind`,
    /// as a digest: the user's password hash, token digest or certificate
    /// subject, the JWT keys, the shared token. A reload keeps a session
    /// while its voucher is unchanged; `None` when nothing vouches for it
    /// any more (the user or its credential is gone).
    pub(crate) fn voucher(&self, user: Option<&str>, kind: CredentialKind) -> Option<u64> {
        use CredentialKind as K;
        let configured = user.and_then(|u| self.users.by_name(u));
        match (kind, configured) {
            (K::None, _) => (!self.required()).then_some(0),
            (K::Jwt, _) => self.jwt.as_ref().map(|_| self.jwt_keys),
            (K::Token | K::Bearer, None) if user.is_none() => self.legacy_token.map(|d| fnv64(&d)),
            (K::Token | K::Bearer, Some(u)) => u.token.map(|d| fnv64(&d)),
            (K::Password, Some(u)) => u.password.as_ref().map(|h| fnv64(h.to_string().as_bytes())),
            (K::Tls, Some(u)) => u.tls_subject.as_ref().map(|s| fnv64(s.as_bytes())),
            _ => None,
        }
    }

    /// The rules of anonymous clients that presented the shared token.
    pub(crate) fn default_rules(&self) -> Arc<Compiled> {
        Arc::clone(&self.default_permissions)
    }

    /// Whether a client must present some credential (`auth_token` set, or
    /// any user, or `[jwt]` configured).
    pub fn required(&self) -> bool {
        self.legacy_token.is_some() || !self.users.is_empty() || self.jwt.is_some()
    }

    /// First step of a `HELLO`. Cheap checks are done here; a password
    /// check (argon2, tens of ms) comes back as a job to run on another
    /// thread. `peer` is the client's address, `tls_subject` its
    /// certificate's subject on the TLS port, `now_unix_secs` the time
    /// (seconds since the Unix epoch) for JWT times and the throttle.
    ///
    /// An explicit credential wins over the certificate: it names who the
    /// client claims to be. A throttled address is refused unchecked.
    pub fn begin(
        &self,
        presented: Presented<'_>,
        peer: IpAddr,
        tls_subject: Option<&str>,
        now_unix_secs: u64,
    ) -> Begin {
        if !self.required() && !matches!(presented, Presented::Malformed) {
            return Begin::Done(Ok(self.anonymous(self.allow_all.clone(), CredentialKind::None)));
        }
        let slow = matches!(presented, Presented::Password { .. });
        match self.guard.admit(peer, now_unix_secs, slow) {
            Admission::Go => {}
            Admission::Later => return Begin::Later,
            Admission::Throttled => return Begin::Done(Err(AuthFailure::Throttled)),
        }
        let outcome = match presented {
            Presented::Token([]) => self.certificate(tls_subject),
            Presented::Token(token) => self.token(token, CredentialKind::Token),
            Presented::Bearer(token) => self.token(token, CredentialKind::Bearer),
            Presented::Jwt(token) => self.jwt(token, now_unix_secs),
            Presented::Malformed => Err(AuthFailure::Malformed),
            Presented::Password { user, password } => {
                return Begin::Verify(self.password_job(user, password, peer, now_unix_secs));
            }
        };
        self.guard.end_check(peer, now_unix_secs, outcome.is_err(), false);
        Begin::Done(outcome)
    }

    /// The rules and limits the configuration gives `user`, if it is
    /// configured: what a reload re-checks open connections against.
    pub(crate) fn rules_of(&self, user: &str) -> Option<(Arc<Compiled>, UserLimits)> {
        self.users.by_name(user).map(|u| (Arc::clone(&u.permissions), u.limits))
    }

    fn anonymous(&self, permissions: Arc<Compiled>, kind: CredentialKind) -> Identity {
        Identity::new(None, permissions, UserLimits::default(), kind)
    }

    /// No credential: the certificate's subject, if it names a user.
    fn certificate(&self, subject: Option<&str>) -> Result<Identity, AuthFailure> {
        let subject = subject.ok_or(AuthFailure::NoCredential)?;
        let user = self.users.by_subject(subject).ok_or(AuthFailure::UnknownUser)?;
        Ok(user.identity(CredentialKind::Tls))
    }

    /// The legacy `auth_token` (anonymous), or a user's token.
    fn token(&self, token: &[u8], kind: CredentialKind) -> Result<Identity, AuthFailure> {
        let digest = sha256(token);
        if self.legacy_token.is_some_and(|legacy| bool::from(legacy.ct_eq(&digest))) {
            return Ok(self.anonymous(self.default_permissions.clone(), kind));
        }
        let user = self.users.by_token(&digest).ok_or(AuthFailure::WrongSecret)?;
        Ok(user.identity(kind))
    }

    /// A JWT: a configured user named by `sub`, or a subject with the
    /// token's `corecast` claim or `default_permissions`.
    fn jwt(&self, token: &str, now: u64) -> Result<Identity, AuthFailure> {
        let verifier = self
            .jwt
            .as_ref()
            .ok_or_else(|| AuthFailure::NotAllowed("no [jwt] key is configured".into()))?;
        let verified = verifier.verify(token, now)?;
        let identity = match self.users.by_name(&verified.sub) {
            Some(user) => user.identity(CredentialKind::Jwt),
            None if verifier.require_known_user => return Err(AuthFailure::UnknownUser),
            None => {
                let permissions = match &verified.permissions {
                    Some(rules) => self.claim_rules(rules)?,
                    None => self.default_permissions.clone(),
                };
                let name = Some(Arc::from(verified.sub.as_str()));
                Identity::new(name, permissions, UserLimits::default(), CredentialKind::Jwt)
            }
        };
        Ok(identity.expiring(verified.exp))
    }

    /// A claim's rules, compiled once per distinct claim.
    fn claim_rules(&self, rules: &Permissions) -> Result<Arc<Compiled>, AuthFailure> {
        let key = serde_json::to_string(rules).unwrap_or_default();
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(compiled) = claims.get(&key) {
            return Ok(Arc::clone(compiled));
        }
        let compiled = Compiled::new(rules)
            .map_err(|e| AuthFailure::BadToken(format!("corecast claim: {e}")))?;
        if claims.len() >= CLAIMS {
            claims.clear();
        }
        let compiled = Arc::new(compiled);
        claims.insert(key, Arc::clone(&compiled));
        Ok(compiled)
    }

    /// The argon2 check of `password`, against the user's hash or, for a
    /// user that does not exist or has no password, the dummy one.
    fn password_job(&self, user: &str, password: &[u8], peer: IpAddr, now: u64) -> PasswordJob {
        let (hash, claimed) = match self.users.by_name(user) {
            Some(found) => match &found.password {
                Some(hash) => (hash.clone(), Ok(found.identity(CredentialKind::Password))),
                None => (self.dummy_hash.clone(), Err(AuthFailure::WrongSecret)),
            },
            None => (self.dummy_hash.clone(), Err(AuthFailure::UnknownUser)),
        };
        PasswordJob {
            hash,
            password: Zeroizing::new(password.to_vec()),
            claimed,
            check: Check { guard: self.guard.clone(), peer, now_unix_secs: now, ended: false },
        }
    }
}

/// Says so when the users' hashes do not all cost the same: an unknown
/// user is checked against a dummy at the first one's parameters, so the
/// others' wrong passwords would answer in another time.
fn warn_of_mixed_costs(users: &Users) {
    let cost = |hash: &PasswordHash| {
        argon2::Params::try_from(hash).ok().map(|p| (p.m_cost(), p.t_cost(), p.p_cost()))
    };
    let mut costs = users.iter().filter_map(|u| u.password.as_deref()).map(cost);
    if let Some(first) = costs.next() {
        if costs.any(|c| c != first) {
            tracing::warn!(
                "users' password hashes use different argon2 parameters: an unknown user is \
                 answered in the time of the first one's; rehash them alike \
                 (corecast-cli hash-password)"
            );
        }
    }
}

/// Authenticators made so far; each takes the next number.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// A digest of the `[jwt]` settings and the bytes of its key files (read
/// again: they were just read and checked).
fn jwt_fingerprint(jwt: &crate::auth::JwtConfig) -> u64 {
    let mut bytes = serde_json::to_vec(jwt).unwrap_or_default();
    let files = [&jwt.hs256_secret_file, &jwt.rs256_public_key_file, &jwt.eddsa_public_key_file];
    for file in files.into_iter().flatten() {
        bytes.extend(std::fs::read(file).unwrap_or_default());
    }
    fnv64(&bytes)
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.iter().count())
            .field("legacy_token", &self.legacy_token.is_some())
            .field("jwt", &self.jwt)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use serde_json::json;

    use super::*;
    use crate::auth::{
        config::{JwtConfig, Permissions, Rules, UserConfig},
        hash_token,
        jwt::tests::{hs256, jwt_config, key_file, temp_file, NOW},
        password::tests::cheap_hash,
        throttle::BURST,
    };

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    fn user(name: &str) -> UserConfig {
        UserConfig { name: name.into(), ..UserConfig::default() }
    }

    fn with_password(name: &str, password: &str) -> UserConfig {
        UserConfig { password: Some(cheap_hash(password.as_bytes())), ..user(name) }
    }

    fn with_token(name: &str, token: &str) -> UserConfig {
        UserConfig { token_sha256: Some(hash_token(token.as_bytes())), ..user(name) }
    }

    fn with_subject(name: &str, subject: &str) -> UserConfig {
        UserConfig { tls_subject: Some(subject.into()), ..user(name) }
    }

    fn config(users: Vec<UserConfig>) -> Config {
        Config { users, ..Config::default() }
    }

    fn auth(cfg: &Config) -> Authenticator {
        Authenticator::new(cfg).expect("valid config")
    }

    /// `begin` run to the end, the password job included.
    fn check(a: &Authenticator, presented: Presented<'_>) -> Result<Identity, AuthFailure> {
        check_from(a, presented, None)
    }

    fn check_from(
        a: &Authenticator,
        presented: Presented<'_>,
        subject: Option<&str>,
    ) -> Result<Identity, AuthFailure> {
        match a.begin(presented, PEER, subject, NOW) {
            Begin::Done(outcome) => outcome,
            Begin::Verify(job) => job.run(),
            Begin::Later => panic!("one check at a time is never put off"),
        }
    }

    /// The failure of `presented`.
    fn fail(a: &Authenticator, presented: Presented<'_>) -> AuthFailure {
        check(a, presented).expect_err("refused")
    }

    fn password<'a>(user: &'a str, password: &'a str) -> Presented<'a> {
        Presented::Password { user, password: password.as_bytes() }
    }

    fn assert_user(outcome: Result<Identity, AuthFailure>, name: &str, kind: CredentialKind) {
        let identity = outcome.expect("authenticated");
        assert_eq!((identity.user(), identity.kind()), (Some(name), kind));
    }

    #[test]
    fn shared_by_the_cores_and_jobs_move_to_a_thread() {
        fn send_sync<T: Send + Sync>() {}
        fn send_static<T: Send + 'static>() {}
        send_sync::<Authenticator>();
        send_sync::<Identity>();
        send_static::<PasswordJob>();
    }

    #[test]
    fn nothing_configured_everyone_is_anonymous() {
        let a = auth(&Config::default());
        assert!(!a.required());
        for presented in [Presented::Token(b""), Presented::Token(b"x"), password("a", "b")] {
            let identity = check(&a, presented).expect("anonymous");
            assert_eq!((identity.user(), identity.kind()), (None, CredentialKind::None));
            assert_eq!(identity.limits(), UserLimits::default());
            assert!(Arc::ptr_eq(identity.permissions(), &a.allow_all));
        }
        assert_eq!(check(&a, Presented::Malformed).expect_err("broken"), AuthFailure::Malformed);
    }

    #[test]
    fn passwords_right_wrong_and_unknown_users() {
        let a = auth(&config(vec![with_password("alice", "pw-a"), with_password("bob", "pw-b")]));
        assert!(a.required());
        assert_user(check(&a, password("alice", "pw-a")), "alice", CredentialKind::Password);
        assert_eq!(fail(&a, password("alice", "pw-b")), AuthFailure::WrongSecret);
        // Alice's password with Bob's name: wrong for Bob, and not Alice.
        assert_eq!(fail(&a, password("bob", "pw-a")), AuthFailure::WrongSecret);
        // An unknown user goes through the same argon2 work and fails, with
        // the same answer on the wire.
        let Begin::Verify(job) = a.begin(password("mallory", "pw-a"), PEER, None, NOW) else {
            panic!("an unknown user is checked like a known one");
        };
        assert!(Arc::ptr_eq(&job.hash, &a.dummy_hash));
        assert_eq!(
            job.hash.params,
            a.users.by_name("alice").expect("alice").password.as_ref().expect("hash").params,
            "the dummy has the users' parameters"
        );
        let unknown = job.run().expect_err("unknown");
        assert_eq!(unknown, AuthFailure::UnknownUser);
    }

    #[test]
    fn a_user_without_a_password_fails_like_a_wrong_one() {
        let a = auth(&config(vec![with_token("svc", "t-svc")]));
        assert!(matches!(a.begin(password("svc", ""), PEER, None, NOW), Begin::Verify(_)));
        assert_eq!(fail(&a, password("svc", "t-svc")), AuthFailure::WrongSecret);
    }

    #[test]
    fn bearer_tokens_name_their_user() {
        let a = auth(&config(vec![with_token("alice", "t-a"), with_token("bob", "t-b")]));
        assert_user(check(&a, Presented::Bearer(b"t-a")), "alice", CredentialKind::Bearer);
        // Bob's token is Bob's secret: it authenticates as Bob, whoever sends it.
        assert_user(check(&a, Presented::Bearer(b"t-b")), "bob", CredentialKind::Bearer);
        assert_eq!(fail(&a, Presented::Bearer(b"t-c")), AuthFailure::WrongSecret);
        assert_eq!(fail(&a, Presented::Bearer(b"")), AuthFailure::WrongSecret);
    }

    #[test]
    fn version_1_clients_send_a_users_token_in_the_token_field() {
        let a = auth(&config(vec![with_token("alice", "t-a")]));
        assert_user(check(&a, Presented::Token(b"t-a")), "alice", CredentialKind::Token);
        assert_eq!(fail(&a, Presented::Token(b"t-x")), AuthFailure::WrongSecret);
        assert_eq!(fail(&a, Presented::Token(b"")), AuthFailure::NoCredential);
    }

    #[test]
    fn the_legacy_token_is_anonymous_with_the_default_permissions() {
        let rules = Permissions {
            publish: Rules { allow: Some(vec!["a.>".into()]), deny: Vec::new() },
            ..Permissions::default()
        };
        let mut cfg = config(vec![with_token("alice", "t-a")]);
        cfg.auth_token = Some("shared".into());
        cfg.default_permissions = Some(rules);
        let a = auth(&cfg);
        for presented in [Presented::Token(b"shared"), Presented::Bearer(b"shared")] {
            let identity = check(&a, presented).expect("the legacy token");
            assert_eq!(identity.user(), None);
            assert!(Arc::ptr_eq(identity.permissions(), &a.default_permissions));
        }
        assert_eq!(fail(&a, Presented::Token(b"shared ")), AuthFailure::WrongSecret);
        assert_user(check(&a, Presented::Token(b"t-a")), "alice", CredentialKind::Token);
        let only_legacy = auth(&Config { auth_token: Some("shared".into()), ..Config::default() });
        assert!(only_legacy.required());
        let identity = check(&only_legacy, Presented::Token(b"shared")).expect("legacy");
        assert!(Arc::ptr_eq(identity.permissions(), &only_legacy.default_permissions));
        assert_eq!(fail(&only_legacy, Presented::Token(b"")), AuthFailure::NoCredential);
    }

    #[test]
    fn a_certificate_subject_names_a_user_unless_a_credential_is_given() {
        let mut bob = with_subject("bob", "CN=svc-b,O=corp");
        bob.token_sha256 = Some(hash_token(b"t-b"));
        let a = auth(&config(vec![with_password("alice", "pw-a"), bob]));
        let cert = Some("CN=svc-b,O=corp");
        assert_user(check_from(&a, Presented::Token(b""), cert), "bob", CredentialKind::Tls);
        let other = check_from(&a, Presented::Token(b""), Some("CN=nobody"));
        assert_eq!(other.expect_err("no such subject"), AuthFailure::UnknownUser);
        // The explicit credential wins: it says who the client claims to be.
        let alice = check_from(&a, password("alice", "pw-a"), cert);
        assert_user(alice, "alice", CredentialKind::Password);
        let wrong = check_from(&a, Presented::Bearer(b"t-x"), cert);
        assert_eq!(
            wrong.expect_err("a wrong token is not saved by the certificate"),
            AuthFailure::WrongSecret
        );
    }

    #[test]
    fn users_get_their_rules_else_the_default_compiled_once() {
        let rules = Permissions {
            subscribe: Rules { allow: None, deny: vec!["secret.>".into()] },
            ..Permissions::default()
        };
        let own =
            |name: &str| UserConfig { permissions: Some(rules.clone()), ..with_token(name, name) };
        let a = auth(&config(vec![own("a"), own("b"), with_token("c", "c")]));
        let identity = |t: &[u8]| check(&a, Presented::Bearer(t)).expect("user");
        assert!(Arc::ptr_eq(identity(b"a").permissions(), identity(b"b").permissions()));
        assert!(!Arc::ptr_eq(identity(b"a").permissions(), identity(b"c").permissions()));
        assert!(Arc::ptr_eq(identity(b"c").permissions(), &a.default_permissions));
    }

    #[test]
    fn limits_come_with_the_user() {
        let mut alice = with_token("alice", "t-a");
        alice.limits.max_connections = Some(3);
        let a = auth(&config(vec![alice]));
        let identity = check(&a, Presented::Bearer(b"t-a")).expect("alice");
        assert_eq!(identity.limits().max_connections, Some(3));
        assert_eq!(identity.expires_unix(), None);
    }

    #[test]
    fn no_credential_when_one_is_required() {
        let a = auth(&config(vec![with_password("alice", "pw")]));
        assert_eq!(fail(&a, Presented::Token(b"")), AuthFailure::NoCredential);
        assert_eq!(fail(&a, Presented::Malformed), AuthFailure::Malformed);
    }

    #[test]
    fn a_throttled_address_is_refused_unchecked() {
        let a = auth(&config(vec![with_password("alice", "pw"), with_token("bob", "t-b")]));
        for _ in 0..BURST {
            assert_eq!(fail(&a, password("alice", "guess")), AuthFailure::WrongSecret);
        }
        let Begin::Done(outcome) = a.begin(password("alice", "pw"), PEER, None, NOW) else {
            panic!("no password job for a throttled address");
        };
        assert_eq!(outcome.expect_err("throttled"), AuthFailure::Throttled);
        assert_eq!(fail(&a, Presented::Bearer(b"t-b")), AuthFailure::Throttled);
        let elsewhere =
            a.begin(Presented::Bearer(b"t-b"), "192.0.2.2".parse().expect("ip"), None, NOW);
        assert!(matches!(elsewhere, Begin::Done(Ok(_))), "{elsewhere:?}");
        let later = a.begin(password("alice", "pw"), PEER, None, NOW + 1);
        let Begin::Verify(job) = later else { panic!("a second later, one more try") };
        assert_user(job.run(), "alice", CredentialKind::Password);
    }

    fn jwt_auth(users: Vec<UserConfig>, jwt: JwtConfig) -> Authenticator {
        auth(&Config { jwt: Some(jwt), ..config(users) })
    }

    #[test]
    fn a_jwt_sub_that_is_a_user_gets_its_rules_and_limits() {
        let mut alice = user("alice");
        alice.limits.max_subscriptions = Some(7);
        let a = jwt_auth(vec![alice], jwt_config(true, false, false));
        assert!(a.required());
        let token = hs256(&json!({ "sub": "alice", "exp": NOW + 60 }));
        let identity = check(&a, Presented::Jwt(&token)).expect("alice");
        assert_eq!((identity.user(), identity.kind()), (Some("alice"), CredentialKind::Jwt));
        assert_eq!(identity.limits().max_subscriptions, Some(7));
        assert_eq!(identity.expires_unix(), Some(NOW + 60));
    }

    #[test]
    fn a_jwt_sub_that_is_no_user_gets_the_claim_or_the_default() {
        let a = jwt_auth(Vec::new(), jwt_config(true, false, false));
        let plain = hs256(&json!({ "sub": "svc", "exp": NOW + 60 }));
        let identity = check(&a, Presented::Jwt(&plain)).expect("svc");
        assert_eq!(identity.user(), Some("svc"));
        assert!(Arc::ptr_eq(identity.permissions(), &a.default_permissions));
        let claim = hs256(&json!({ "sub": "svc", "exp": NOW + 60,
                                   "corecast": { "pub": { "allow": ["svc.>"] } } }));
        let identity = check(&a, Presented::Jwt(&claim)).expect("svc");
        assert!(!Arc::ptr_eq(identity.permissions(), &a.default_permissions));
        let again = hs256(&json!({ "sub": "other", "exp": NOW + 61,
                                   "corecast": { "pub": { "allow": ["svc.>"] } } }));
        let same = check(&a, Presented::Jwt(&again)).expect("other");
        assert!(Arc::ptr_eq(identity.permissions(), same.permissions()), "one claim, one copy");
        let strict = JwtConfig { require_known_user: true, ..jwt_config(true, false, false) };
        let a = jwt_auth(vec![user("alice")], strict);
        assert_eq!(fail(&a, Presented::Jwt(&claim)), AuthFailure::UnknownUser);
    }

    #[test]
    fn jwts_without_a_usable_key_or_time_are_refused() {
        let a = jwt_auth(Vec::new(), jwt_config(false, true, false));
        let token = hs256(&json!({ "sub": "svc", "exp": NOW + 60 }));
        let err = check(&a, Presented::Jwt(&token)).expect_err("no HS256 key");
        assert!(matches!(err, AuthFailure::NotAllowed(_)), "{err:?}");
        let expired = crate::auth::jwt::tests::rs256(&json!({ "sub": "svc", "exp": NOW - 60 }));
        assert_eq!(fail(&a, Presented::Jwt(&expired)), AuthFailure::Expired);
        let no_jwt = auth(&config(vec![with_token("alice", "t")]));
        let err = check(&no_jwt, Presented::Jwt(&token)).expect_err("no [jwt]");
        assert!(matches!(err, AuthFailure::NotAllowed(_)), "{err:?}");
    }

    fn invalid(cfg: &Config) -> String {
        match Authenticator::new(cfg) {
            Err(ConfigError::Invalid(text)) => text,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn config_errors_name_the_user() {
        let bad_phc = UserConfig { password: Some("hunter2".into()), ..user("alice") };
        let text = invalid(&config(vec![bad_phc]));
        assert!(text.starts_with("user \"alice\": password: not a PHC string"), "{text}");
        assert!(!text.contains("hunter2"), "the config value is not echoed: {text}");
        let bad_hex = UserConfig { token_sha256: Some("abc".into()), ..user("bob") };
        let text = invalid(&config(vec![bad_hex]));
        assert!(text.starts_with("user \"bob\": token_sha256 is not"), "{text}");
        let text = invalid(&config(vec![with_token("carol", "1"), with_token("carol", "2")]));
        assert_eq!(text, "user \"carol\": another user has the same name");
        let text = invalid(&config(vec![with_token("a", "same"), with_token("b", "same")]));
        assert_eq!(text, "user \"b\": another user has the same token_sha256");
        let text = invalid(&config(vec![with_subject("a", "CN=x"), with_subject("b", "CN=x")]));
        assert_eq!(text, "user \"b\": another user has the tls_subject \"CN=x\"");
        let text = invalid(&config(vec![user("dave")]));
        assert!(text.starts_with("user \"dave\": no credential"), "{text}");
        let text = invalid(&config(vec![user("")]));
        assert!(text.contains("the name is empty"), "{text}");
        let mut legacy = config(vec![with_token("erin", "shared")]);
        legacy.auth_token = Some("shared".into());
        assert!(invalid(&legacy).contains("auth_token"));
    }

    #[test]
    fn config_errors_name_the_key_file() {
        let broken = JwtConfig {
            rs256_public_key_file: Some(temp_file("broken.pem", b"-----BEGIN PUBLIC KEY-----\n")),
            ..JwtConfig::default()
        };
        let text = invalid(&Config { jwt: Some(broken), ..Config::default() });
        assert!(text.contains("rs256_public_key_file") && text.contains("broken.pem"), "{text}");
        let swapped = JwtConfig {
            eddsa_public_key_file: Some(key_file("rs256-public.pem")),
            ..JwtConfig::default()
        };
        let text = invalid(&Config { jwt: Some(swapped), ..Config::default() });
        assert!(
            text.contains("eddsa_public_key_file") && text.contains("rs256-public.pem"),
            "{text}"
        );
        // With [jwt], a user may have no credential of its own: JWTs name it.
        assert!(Authenticator::new(&Config {
            jwt: Some(jwt_config(true, false, false)),
            ..config(vec![user("dave")])
        })
        .is_ok());
    }
}

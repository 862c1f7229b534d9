//! A fixed-size set of core indexes: which cores want a topic.

/// Most executors one broker runs.
pub const MAX_CORES: usize = 256;

const WORDS: usize = MAX_CORES / 64;

/// A set of core indexes below [`MAX_CORES`], stored as a bitmap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreSet([u64; WORDS]);

impl CoreSet {
    /// Adds a core.
    pub fn insert(&mut self, core: usize) {
        self.0[core / 64] |= 1 << (core % 64);
    }

    /// Removes a core.
    pub fn remove(&mut self, core: usize) {
        self.0[core / 64] &= !(1 << (core % 64));
    }

    /// Adds every core of `other`.
    pub fn union_with(&mut self, other: &CoreSet) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine |= theirs;
        }
    }

    /// Whether no core is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The cores in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_iter_remove() {
        let mut s = CoreSet::default();
        assert!(s.is_empty());
        for c in [0, 3, 64, 255] {
            s.insert(c);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 3, 64, 255]);
        s.remove(3);
        s.remove(255);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 64]);
    }

    #[test]
    fn union_keeps_both() {
        let (mut a, mut b) = (CoreSet::default(), CoreSet::default());
        a.insert(1);
        b.insert(1);
        b.insert(200);
        a.union_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![1, 200]);
    }
}

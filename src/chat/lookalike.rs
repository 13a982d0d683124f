//! Names that look alike count as one name: `trol`, `trоl` (Cyrillic о), `tr0l` and `Trol`
//! (docs/api.md, Validation). Keys are Unicode TR39 confusable skeletons.

use crate::model::name_key;
use crate::store::BlockedName;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use unicode_security::confusable_detection::skeleton;

/// The look-alike keys of a name: the skeleton of its lowercase form, which ignores case as
/// names do, and of the name as typed, since capitals have look-alikes of their own (`I`, `l`).
/// Two names look alike when they share a key.
pub fn keys(name: &str) -> Vec<String> {
    let lower = fold(&name_key(name));
    let typed = fold(name);
    if typed == lower {
        vec![lower]
    } else {
        vec![lower, typed]
    }
}

/// Whether two names look alike (the same name in another case does too).
pub fn alike(a: &str, b: &str) -> bool {
    let theirs = keys(b);
    keys(a).iter().any(|k| theirs.contains(k))
}

/// A skeleton, lowercased again: TR39 maps to capitals at times (`0` to `O`).
fn fold(s: &str) -> String {
    skeleton(s).collect::<String>().to_lowercase()
}

/// Names held (registered, or online), findable by look-alike key.
#[derive(Debug, Default)]
pub struct Index {
    /// Look-alike key → user key (the lowercased name) → the name as shown.
    by_key: HashMap<String, BTreeMap<String, String>>,
}

impl Index {
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Index {
        let mut index = Index::default();
        for name in names {
            index.add(name);
        }
        index
    }

    pub fn add(&mut self, name: &str) {
        let user_key = name_key(name);
        for key in keys(name) {
            self.by_key
                .entry(key)
                .or_default()
                .insert(user_key.clone(), name.to_owned());
        }
    }

    pub fn remove(&mut self, name: &str) {
        let user_key = name_key(name);
        for key in keys(name) {
            if let Some(holders) = self.by_key.get_mut(&key) {
                holders.remove(&user_key);
                if holders.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }

    /// Whether a held name looks like `name` (or is `name`, in any case).
    pub fn holds(&self, name: &str) -> bool {
        keys(name).iter().any(|k| self.by_key.contains_key(k))
    }

    /// Every pair of different held names that look alike, each pair once, sorted.
    pub fn pairs(&self) -> BTreeSet<(String, String)> {
        let mut pairs = BTreeSet::new();
        for holders in self.by_key.values() {
            let names: Vec<&String> = holders.values().collect();
            for (i, a) in names.iter().enumerate() {
                for b in &names[i + 1..] {
                    pairs.insert(((*a).clone(), (*b).clone()));
                }
            }
        }
        pairs
    }
}

/// Names an admin kicked, by look-alike key, with the end of each block; stored as the names
/// kicked with their ends in Unix seconds (`stored`), so a restart keeps them.
#[derive(Debug, Default)]
pub struct Blocks {
    until: HashMap<String, std::time::Instant>,
    /// The names as kicked, with the Unix second each block ends.
    kicked: HashMap<String, i64>,
}

impl Blocks {
    /// Blocks `name` and every name that looks like it for `length` from `now` (Unix `now_secs`).
    pub fn block(
        &mut self,
        name: &str,
        now: std::time::Instant,
        now_secs: i64,
        length: std::time::Duration,
    ) {
        let until = now + length;
        for key in keys(name) {
            let end = self.until.entry(key).or_insert(until);
            *end = (*end).max(until);
        }
        let secs = i64::try_from(length.as_secs()).unwrap_or(i64::MAX);
        let end = self.kicked.entry(name.to_owned()).or_insert(0);
        *end = (*end).max(now_secs.saturating_add(secs));
    }

    /// Whether `name` looks like a name blocked at `now`; forgets blocks that have ended.
    pub fn blocks(&mut self, name: &str, now: std::time::Instant) -> bool {
        self.until.retain(|_, until| *until > now);
        keys(name).iter().any(|k| self.until.contains_key(k))
    }

    /// The blocks to store: names kicked whose blocks have not ended at `now_secs`.
    pub fn stored(&self, now_secs: i64) -> Vec<BlockedName> {
        let mut stored: Vec<BlockedName> = self
            .kicked
            .iter()
            .filter(|(_, until)| **until > now_secs)
            .map(|(name, until)| BlockedName {
                name: name.clone(),
                until: *until,
            })
            .collect();
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        stored
    }

    /// The blocks read back from storage that have not ended at `now` (Unix `now_secs`).
    pub fn from_stored(stored: Vec<BlockedName>, now: std::time::Instant, now_secs: i64) -> Blocks {
        let mut blocks = Blocks::default();
        for BlockedName { name, until } in stored {
            let Ok(left) = u64::try_from(until.saturating_sub(now_secs)) else {
                continue;
            };
            if left > 0 {
                blocks.block(&name, now, now_secs, std::time::Duration::from_secs(left));
            }
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn confusable_spellings_look_alike() {
        for (a, b) in [
            ("trol", "tr\u{043e}l"),
            ("trol", "tr0l"),
            ("trol", "TROL"),
            ("Trol", "tr\u{041e}L"),
            ("Ian", "lan"),
            ("Ian", "ian"),
            ("paypal", "p\u{0430}yp\u{0430}l"),
            ("modern", "rnodern"),
        ] {
            assert!(alike(a, b), "{a} and {b} look alike");
            assert!(alike(b, a), "{b} and {a} look alike");
        }
    }

    #[test]
    fn different_names_do_not_look_alike() {
        for (a, b) in [
            ("alice", "bob"),
            ("ivan", "lvan"),
            ("trol", "troll"),
            ("ann", "anna"),
            ("José", "Jose"),
        ] {
            assert!(!alike(a, b), "{a} and {b} differ");
        }
    }

    #[test]
    fn the_index_finds_look_alikes_and_counts_pairs() {
        let mut index = Index::of(["trol", "tr\u{043e}l", "Ian", "alice"]);
        assert!(index.holds("TR0L"));
        assert!(index.holds("lan"));
        assert!(!index.holds("bob"));
        let pairs = index.pairs();
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        index.remove("tr\u{043e}l");
        assert!(
            index.holds("trol"),
            "the other of the pair still holds the key"
        );
        index.remove("trol");
        assert!(!index.holds("trol"));
        assert!(index.pairs().is_empty());
    }

    #[test]
    fn a_block_covers_look_alikes_until_it_ends() {
        let mut blocks = Blocks::default();
        let now = Instant::now();
        blocks.block("Ian", now, 1_000, Duration::from_secs(60));
        for name in ["ian", "IAN", "lan", "\u{0399}an"] {
            assert!(blocks.blocks(name, now), "{name} is blocked");
        }
        assert!(!blocks.blocks("ivan", now));
        assert!(!blocks.blocks("lan", now + Duration::from_secs(61)));
    }

    #[test]
    fn stored_blocks_come_back_with_the_time_they_have_left() {
        let mut blocks = Blocks::default();
        let now = Instant::now();
        blocks.block("Ian", now, 1_000, Duration::from_secs(60));
        blocks.block("trol", now, 1_000, Duration::from_secs(5));
        let stored = blocks.stored(1_010);
        assert_eq!(
            stored,
            [BlockedName {
                name: "Ian".into(),
                until: 1_060
            }],
            "an ended block is not stored"
        );
        // Read back 20 s later: 30 s are left.
        let later = Instant::now();
        let mut restored = Blocks::from_stored(stored, later, 1_030);
        assert!(restored.blocks("lan", later + Duration::from_secs(29)));
        assert!(!restored.blocks("lan", later + Duration::from_secs(31)));
        assert!(
            Blocks::from_stored(blocks.stored(1_000), later, 2_000)
                .stored(2_000)
                .is_empty()
        );
    }
}

//! The answers of the HTTP service, kept for `cache_ttl` so that a client's next CONNECT or its
//! next PUBLISH to the same topic costs no request, and so that the core's synchronous topic check
//! finds the answer fetched for it a moment before. Bounded: at [`MAX_ENTRIES`] the expired
//! answers go, and if that frees nothing, all of them (a burst of distinct topics costs requests
//! again, never memory). Failures are not kept: the next check asks again.

use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashbrown::{Equivalent, HashMap};

use super::request::Answer;
use crate::plugins::{TopicQuery, TopicQueryRef};

/// The most answers one plugin keeps.
pub(super) const MAX_ENTRIES: usize = 100_000;

/// Answers by question, each with the time it stops being used.
pub(super) struct AnswerCache<K> {
    ttl: Duration,
    /// foldhash, seeded per process (the keys hold what clients send).
    entries: Mutex<HashMap<K, (Instant, Answer), foldhash::fast::RandomState>>,
}

/// A borrowed query finds its owned form's answer.
impl Equivalent<TopicQuery> for TopicQueryRef<'_> {
    fn equivalent(&self, key: &TopicQuery) -> bool {
        *self == key.borrowed()
    }
}

impl<K: Eq + Hash> AnswerCache<K> {
    pub(super) fn new(ttl: Duration) -> Self {
        AnswerCache {
            ttl,
            entries: Mutex::new(HashMap::default()),
        }
    }

    /// The answer to `key`, if it is younger than the ttl.
    pub(super) fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<Answer> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((until, answer)) if Instant::now() < *until => Some(*answer),
            _ => None,
        }
    }

    pub(super) fn insert(&self, key: K, answer: Answer) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, answer));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_the_cache_stays_bounded() {
        let cache = AnswerCache::new(Duration::from_millis(30));
        cache.insert(1u32, Answer::Granted);
        assert_eq!(cache.get(&1), Some(Answer::Granted));
        assert_eq!(cache.get(&2), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&1), None);

        let cache = AnswerCache::new(Duration::from_secs(60));
        for key in 0..MAX_ENTRIES as u32 + 10 {
            cache.insert(key, Answer::Denied);
        }
        assert!(cache.len() <= MAX_ENTRIES);
        assert_eq!(cache.get(&(MAX_ENTRIES as u32 + 9)), Some(Answer::Denied));
    }

    #[test]
    fn a_borrowed_query_finds_the_owned_one() {
        let cache = AnswerCache::new(Duration::from_secs(60));
        let owned = TopicQuery {
            client_id: "c".into(),
            username: Some("u".into()),
            access: crate::plugins::TopicAccess::Publish,
            topic: "a/b".into(),
        };
        cache.insert(owned.clone(), Answer::Granted);
        assert_eq!(cache.get(&owned.borrowed()), Some(Answer::Granted));
        let other = TopicQueryRef {
            username: None,
            ..owned.borrowed()
        };
        assert_eq!(cache.get(&other), None);
    }
}

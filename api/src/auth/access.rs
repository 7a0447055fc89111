//! The Cloud Controller's answers about who may see which app, cached briefly per
//! (token, app): one page load asks for the same app several times, and the CC should hear of
//! it once. Concurrent requests for the same pair share one CC request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::ApiError;

/// What the Cloud Controller said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// 200, with the app's name.
    Allowed(Option<String>),
    /// 403 or 404: the user may not see it (or it does not exist: the CC does not tell).
    Denied,
}

struct Entry {
    created: Instant,
    /// Empty while the CC is being asked, and after a failed ask (the next caller asks again).
    verdict: Arc<OnceCell<Verdict>>,
}

/// Verdicts by (token, app id), each for `ttl`, at most `capacity` of them; expired ones are
/// swept out once per `ttl` (tokens are long strings: dead entries should not linger).
pub(super) struct AccessCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Entries>,
}

/// Sizes only: the keys hold bearer tokens.
impl std::fmt::Debug for AccessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("entries", &self.lock().map.len())
            .finish()
    }
}

struct Entries {
    map: HashMap<(String, String), Entry>,
    last_sweep: Instant,
}

impl AccessCache {
    pub(super) fn new(ttl: Duration, capacity: usize) -> AccessCache {
        AccessCache {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    pub(super) fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl;
    }

    /// Verdicts held now (some possibly expired but not yet evicted).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// The cached verdict for `(token, app)`, or `ask`'s, which is cached when it is one
    /// (errors are not: a CC outage should not outlast itself).
    pub(super) async fn verdict<F, Fut>(
        &self,
        token: &str,
        app: &str,
        ask: F,
    ) -> Result<Verdict, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Verdict, ApiError>>,
    {
        let cell = {
            let mut entries = self.lock();
            let now = Instant::now();
            let key = (token.to_owned(), app.to_owned());
            match entries.map.get(&key) {
                Some(entry) if now.duration_since(entry.created) < self.ttl => {
                    entry.verdict.clone()
                }
                _ => {
                    self.make_room(&mut entries, now);
                    let verdict = Arc::new(OnceCell::new());
                    entries.map.insert(
                        key,
                        Entry {
                            created: now,
                            verdict: verdict.clone(),
                        },
                    );
                    verdict
                }
            }
        };
        cell.get_or_try_init(ask).await.cloned()
    }

    /// The cached verdict for `(token, app)`, without asking anyone.
    pub(super) fn cached(&self, token: &str, app: &str) -> Option<Verdict> {
        let entries = self.lock();
        let entry = entries.map.get(&(token.to_owned(), app.to_owned()))?;
        if entry.created.elapsed() >= self.ttl {
            return None;
        }
        entry.verdict.get().cloned()
    }

    /// Caches a verdict learnt some other way (a list answer of the Cloud Controller).
    pub(super) fn remember(&self, token: &str, app: &str, verdict: Verdict) {
        let mut entries = self.lock();
        let now = Instant::now();
        self.make_room(&mut entries, now);
        entries.map.insert(
            (token.to_owned(), app.to_owned()),
            Entry {
                created: now,
                verdict: Arc::new(OnceCell::from(verdict)),
            },
        );
    }

    /// Evicts expired entries when full or once per `ttl`, then the oldest ones while full.
    fn make_room(&self, entries: &mut Entries, now: Instant) {
        let full = entries.map.len() >= self.capacity;
        if !full && now.duration_since(entries.last_sweep) < self.ttl {
            return;
        }
        entries.last_sweep = now;
        let ttl = self.ttl;
        entries
            .map
            .retain(|_, entry| now.duration_since(entry.created) < ttl);
        let entries = &mut entries.map;
        while entries.len() >= self.capacity {
            let oldest = entries
                .iter()
                .min_by_key(|(_, entry)| entry.created)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => entries.remove(&key),
                None => break,
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    async fn ask(
        cache: &AccessCache,
        asked: &AtomicU32,
        token: &str,
        app: &str,
    ) -> Result<Verdict, ApiError> {
        cache
            .verdict(token, app, || async {
                asked.fetch_add(1, Ordering::Relaxed);
                Ok(Verdict::Allowed(Some(app.to_owned())))
            })
            .await
    }

    #[tokio::test]
    async fn verdicts_are_reused_per_token_and_app_until_they_expire() {
        let cache = AccessCache::new(Duration::from_secs(30), 100);
        let asked = AtomicU32::new(0);
        for _ in 0..3 {
            let verdict = ask(&cache, &asked, "t1", "a").await;
            assert_eq!(verdict, Ok(Verdict::Allowed(Some("a".to_owned()))));
        }
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        ask(&cache, &asked, "t2", "a").await.expect("a verdict");
        ask(&cache, &asked, "t1", "b").await.expect("a verdict");
        assert_eq!(asked.load(Ordering::Relaxed), 3);

        let expired = AccessCache::new(Duration::ZERO, 100);
        ask(&expired, &asked, "t1", "a").await.expect("a verdict");
        ask(&expired, &asked, "t1", "b").await.expect("a verdict");
        ask(&expired, &asked, "t1", "a").await.expect("a verdict");
        assert_eq!(asked.load(Ordering::Relaxed), 6);
        // Expired entries were swept out on the way; only the newest remains.
        assert_eq!(expired.len(), 1);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache = AccessCache::new(Duration::from_secs(30), 100);
        let failed = cache
            .verdict("t", "a", || async { Err(ApiError::unavailable("CC down")) })
            .await;
        assert_eq!(failed, Err(ApiError::unavailable("CC down")));
        let asked = AtomicU32::new(0);
        ask(&cache, &asked, "t", "a").await.expect("asks again");
        assert_eq!(asked.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_capacity() {
        let cache = AccessCache::new(Duration::from_secs(30), 10);
        let asked = AtomicU32::new(0);
        for app in 0..25 {
            ask(&cache, &asked, "t", &app.to_string())
                .await
                .expect("a verdict");
            assert!(cache.len() <= 10, "{} entries", cache.len());
        }
        // The newest survive, the oldest were evicted.
        ask(&cache, &asked, "t", "24").await.expect("a verdict");
        assert_eq!(asked.load(Ordering::Relaxed), 25);
        ask(&cache, &asked, "t", "0").await.expect("a verdict");
        assert_eq!(asked.load(Ordering::Relaxed), 26);
    }
}

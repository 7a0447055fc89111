//! Latency percentiles for a rollup window: exact while a window holds few samples, then a
//! log-bucketed histogram whose answers are within 0.5 % of the exact nearest-rank value
//! (SPEC §5 allows 1 %). Memory per window is bounded by the spread of its latencies, not by
//! how many requests it saw.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Samples kept exactly before switching to buckets: most app-minutes see fewer requests.
const EXACT_LIMIT: usize = 128;
/// Relative accuracy of a bucket's representative value.
const ALPHA: f64 = 0.005;

/// A mergeable percentile summary of non-negative values (milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySketch {
    count: u64,
    exact: Vec<f64>,
    /// Bucket index → count; `None` while exact.
    buckets: Option<Buckets>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Buckets {
    zeros: u64,
    counts: BTreeMap<i32, u64>,
}

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// The smallest value told apart from zero (1 ns in ms); anything below counts as zero.
const MIN_POSITIVE: f64 = 1e-6;

impl Buckets {
    fn insert(&mut self, value: f64, n: u64) {
        if value < MIN_POSITIVE {
            self.zeros += n;
        } else {
            let index = (value.ln() / gamma().ln()).ceil() as i32;
            *self.counts.entry(index).or_insert(0) += n;
        }
    }

    /// Every value in bucket `i` lies in (γ^(i-1), γ^i]; this point is within ALPHA of all.
    fn representative(index: i32) -> f64 {
        let g = gamma();
        2.0 * g.powi(index) / (g + 1.0)
    }
}

impl LatencySketch {
    pub fn insert(&mut self, value: f64) {
        let value = value.max(0.0);
        self.count += 1;
        match &mut self.buckets {
            Some(buckets) => buckets.insert(value, 1),
            None => {
                self.exact.push(value);
                if self.exact.len() > EXACT_LIMIT {
                    let mut buckets = Buckets::default();
                    for v in self.exact.drain(..) {
                        buckets.insert(v, 1);
                    }
                    self.exact.shrink_to_fit();
                    self.buckets = Some(buckets);
                }
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The nearest-rank percentile (rank ⌈p·n⌉), `None` when empty. `p` in (0, 1].
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p * self.count as f64).ceil() as u64).clamp(1, self.count);
        match &self.buckets {
            None => {
                let mut sorted = self.exact.clone();
                sorted.sort_by(f64::total_cmp);
                sorted.get(rank as usize - 1).copied()
            }
            Some(buckets) => {
                let mut seen = buckets.zeros;
                if seen >= rank {
                    return Some(0.0);
                }
                for (index, count) in &buckets.counts {
                    seen += count;
                    if seen >= rank {
                        return Some(Buckets::representative(*index));
                    }
                }
                // Unreachable while counts add up to `count`; answer the largest bucket.
                buckets
                    .counts
                    .keys()
                    .next_back()
                    .map(|i| Buckets::representative(*i))
            }
        }
    }

    /// Adds another sketch's samples to this one.
    pub fn merge(&mut self, other: &LatencySketch) {
        match &other.buckets {
            None => other.exact.iter().for_each(|v| self.insert(*v)),
            Some(theirs) => {
                let mut mine = self.buckets.take().unwrap_or_default();
                for v in self.exact.drain(..) {
                    mine.insert(v, 1);
                }
                mine.zeros += theirs.zeros;
                for (index, count) in &theirs.counts {
                    *mine.counts.entry(*index).or_insert(0) += count;
                }
                self.count += other.count;
                self.buckets = Some(mine);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nearest_rank(values: &[f64], p: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn few_samples_are_exact() {
        let mut sketch = LatencySketch::default();
        for v in [5.0, 1.0, 3.0, 2.0, 4.0] {
            sketch.insert(v);
        }
        assert_eq!(sketch.percentile(0.5), Some(3.0));
        assert_eq!(sketch.percentile(0.95), Some(5.0));
        assert_eq!(sketch.percentile(0.2), Some(1.0));
        assert_eq!(LatencySketch::default().percentile(0.5), None);
    }

    #[test]
    fn many_samples_stay_within_one_percent_of_nearest_rank() {
        let mut sketch = LatencySketch::default();
        let mut values = Vec::new();
        // A deterministic spread over five decades, with zeros.
        let mut x: u64 = 12345;
        for i in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = if i % 97 == 0 {
                0.0
            } else {
                ((x >> 11) as f64 / (1u64 << 53) as f64 * 11.5).exp() / 100.0
            };
            values.push(v);
            sketch.insert(v);
        }
        for p in [0.01, 0.5, 0.95, 0.99, 1.0] {
            let exact = nearest_rank(&values, p);
            let approx = sketch.percentile(p).expect("non-empty");
            let error = if exact == 0.0 {
                approx
            } else {
                (approx - exact).abs() / exact
            };
            assert!(error <= 0.01, "p{p}: {approx} vs exact {exact}");
        }
    }

    #[test]
    fn merging_equals_inserting_everything_into_one() {
        let mut a = LatencySketch::default();
        let mut b = LatencySketch::default();
        let mut both = LatencySketch::default();
        for i in 0..300 {
            let v = f64::from(i) * 1.7;
            if i % 3 == 0 { &mut a } else { &mut b }.insert(v);
            both.insert(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), both.count());
        for p in [0.5, 0.95, 0.99] {
            assert_eq!(a.percentile(p), both.percentile(p));
        }
    }
}

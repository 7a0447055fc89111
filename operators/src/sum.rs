//! A sum of `f64`s that does not depend on the order they are added in.
//!
//! One process adds a window's samples in the order its single ingest point read them, so a
//! plain `f64` sum gives the same bits every run. In a cluster (SPEC §12) samples of one
//! window come from several processes in whatever order the network delivers them, and
//! floating-point addition is not associative: the last bits of an average would change
//! from run to run. So values are added as fixed-point integers (2⁻⁵⁰ resolution, exact for
//! every `f64` of magnitude at least 2⁻³ and within 2⁻⁵⁰ below that), whose sum is exact
//! and order-free. A value of 2⁶⁰ or more, or a sum that would overflow, goes to a plain
//! `f64` part instead — order-dependent, but only for magnitudes no metric here reaches.

use serde::{Deserialize, Serialize};

/// 2⁵⁰: the fixed-point scale.
const SCALE: f64 = (1u64 << 50) as f64;
/// Values below 2⁶⁰ in magnitude are summed exactly (2⁶⁰ × 2⁵⁰ = 2¹¹⁰ leaves 2¹⁷ samples of
/// headroom in an `i128`).
const EXACT_BELOW: f64 = (1u64 << 60) as f64;

/// An order-independent sum; see the module doc.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExactSum {
    fixed: i128,
    rest: f64,
}

impl ExactSum {
    pub fn add(&mut self, value: f64) {
        if value.is_finite() && value.abs() < EXACT_BELOW {
            // Scaling by a power of two is exact; the conversion truncates deterministically.
            let scaled = (value * SCALE) as i128;
            if let Some(sum) = self.fixed.checked_add(scaled) {
                self.fixed = sum;
                return;
            }
        }
        self.rest += value;
    }

    pub fn value(&self) -> f64 {
        self.fixed as f64 / SCALE + self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_is_the_same_in_any_order() {
        let values: Vec<f64> = (0..1000)
            .map(|i| (i as f64 * 0.7311).sin() * 97.3 + 1e-7 * i as f64)
            .collect();
        let mut forward = ExactSum::default();
        values.iter().for_each(|v| forward.add(*v));
        let mut backward = ExactSum::default();
        values.iter().rev().for_each(|v| backward.add(*v));
        let mut shuffled = ExactSum::default();
        for i in (0..1000).map(|i| (i * 379) % 1000) {
            shuffled.add(values[i]);
        }
        assert_eq!(forward.value().to_bits(), backward.value().to_bits());
        assert_eq!(forward.value().to_bits(), shuffled.value().to_bits());
        // And plain floating-point addition indeed differs here.
        let plain: f64 = values.iter().sum();
        let reversed: f64 = values.iter().rev().sum();
        assert_ne!(plain.to_bits(), reversed.to_bits());
        assert!((forward.value() - plain).abs() < 1e-9);
    }

    #[test]
    fn small_and_huge_values_still_add_up() {
        let mut sum = ExactSum::default();
        for v in [0.1, 0.2, 1e20, -1e20, 3.5] {
            sum.add(v);
        }
        assert!((sum.value() - 3.8).abs() < 1e-12, "{}", sum.value());
        let mut integers = ExactSum::default();
        (1..=100).for_each(|i| integers.add(f64::from(i)));
        assert_eq!(integers.value(), 5050.0);
    }
}

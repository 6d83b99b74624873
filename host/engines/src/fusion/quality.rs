//! Per-source quality of a fan-out route: how often a source's answer counts
//! (acceptance) and how often it agrees with the fused result (agreement).

use std::sync::{Mutex, PoisonError};

/// Weight of the newest observation in the moving averages: the last ~10
/// fusions dominate, so a source that starts lying loses its weight quickly.
const ALPHA: f64 = 0.1;

/// One source's quality; both averages start at 1.0 (trusted until shown otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceQuality {
    /// Exponentially weighted share of the source's answers that counted, 0..=1.
    pub acceptance: f64,
    /// Exponentially weighted share of its counted answers that agreed with
    /// the result (votes and merges; other resolvers do not judge agreement), 0..=1.
    pub agreement: f64,
}

impl SourceQuality {
    /// acceptance × agreement, the factor `weighted-vote` with `learn = true`
    /// applies to the source's weight.
    pub fn score(&self) -> f64 {
        self.acceptance * self.agreement
    }
}

impl Default for SourceQuality {
    fn default() -> Self {
        Self {
            acceptance: 1.0,
            agreement: 1.0,
        }
    }
}

/// The quality of every source of one route.
#[derive(Debug)]
pub struct Quality {
    sources: Mutex<Vec<SourceQuality>>,
}

impl Quality {
    /// `n` sources, all at full quality.
    pub fn new(n: usize) -> Self {
        Self {
            sources: Mutex::new(vec![SourceQuality::default(); n]),
        }
    }

    /// Every source's quality, in source order.
    pub fn snapshot(&self) -> Vec<SourceQuality> {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records one fusion: for each `(source, accepted, agreed)` — `agreed`
    /// is `None` when the resolver does not judge agreement or the answer
    /// did not count.
    pub fn record(&self, observations: impl IntoIterator<Item = (usize, bool, Option<bool>)>) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        for (source, accepted, agreed) in observations {
            let Some(q) = sources.get_mut(source) else {
                continue;
            };
            q.acceptance += ALPHA * (f64::from(u8::from(accepted)) - q.acceptance);
            if let Some(agreed) = agreed {
                q.agreement += ALPHA * (f64::from(u8::from(agreed)) - q.agreement);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_disagrees_loses_quality_and_recovers() {
        let quality = Quality::new(2);
        for _ in 0..20 {
            quality.record([(0, true, Some(true)), (1, true, Some(false))]);
        }
        let q = quality.snapshot();
        assert!(q[0].score() > 0.99);
        assert!(q[1].score() < 0.2, "{:?}", q[1]);
        for _ in 0..40 {
            quality.record([(1, true, Some(true))]);
        }
        assert!(quality.snapshot()[1].score() > 0.9);
        quality.record([(1, false, None)]);
        let q = quality.snapshot()[1];
        assert!(q.acceptance < 0.95 && q.agreement > 0.9);
    }
}

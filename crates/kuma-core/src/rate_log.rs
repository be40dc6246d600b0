//! Rate-limited logging of a recurring event: the first occurrence is logged at once, then at
//! most one line per period, carrying how many occurred since the last line (a full accept
//! queue, a scrape target that keeps failing).

use std::time::{Duration, Instant};

/// Counts occurrences of one event and says when to log them.
#[derive(Debug)]
pub struct RateLog {
    every: Duration,
    last: Option<Instant>,
    count: u64,
}

impl RateLog {
    /// At most one log line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            count: 0,
        }
    }

    /// One occurrence now: `Some(n)` when it is time to log (`n` occurrences since the last
    /// line, this one included), else `None`.
    pub fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    /// [`RateLog::hit`] at `now`.
    pub fn hit_at(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_between_logs() {
        let every = Duration::from_secs(10);
        let mut r = RateLog::new(every);
        let t0 = Instant::now();
        assert_eq!(r.hit_at(t0), Some(1));
        assert_eq!(r.hit_at(t0), None);
        assert_eq!(r.hit_at(t0 + every / 2), None);
        assert_eq!(r.hit_at(t0 + every), Some(3));
    }
}

//! Reconnect backoff: exponential with jitter, reset after a healthy connection.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "equal jitter": half the step is fixed, half random, so retries
/// of many clients spread out but never collapse to zero.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            step: min,
        }
    }

    /// The next delay; doubles the step for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter)
    }

    /// Back to the minimum, after a connection proved healthy.
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_cap_with_bounded_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(125), Duration::from_secs(10));
        let mut steps = Vec::new();
        for _ in 0..12 {
            steps.push(b.next_delay());
        }
        assert!(
            steps[0] >= Duration::from_micros(62_500) && steps[0] <= Duration::from_millis(125)
        );
        assert!(steps[3] >= Duration::from_millis(500) && steps[3] <= Duration::from_secs(1));
        for s in &steps[7..] {
            assert!(
                *s >= Duration::from_secs(5) && *s <= Duration::from_secs(10),
                "{s:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}

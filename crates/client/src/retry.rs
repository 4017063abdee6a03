//! Exponential backoff with full jitter.

use std::time::Duration;

/// Backoff state for one operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Attempts before giving up.
    pub max_attempts: u32,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(25),
            max: Duration::from_secs(2),
            max_attempts: 30,
            attempt: 0,
        }
    }
}

impl Backoff {
    /// Delays from `initial`, doubling up to `max`, for at most
    /// `max_attempts` attempts.
    pub fn new(initial: Duration, max: Duration, max_attempts: u32) -> Backoff {
        Backoff {
            initial,
            max,
            max_attempts,
            attempt: 0,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay (at least `floor`), or `None` when attempts ran out.
    pub fn next_delay(&mut self, floor: Option<Duration>) -> Option<Duration> {
        if self.attempt >= self.max_attempts {
            return None;
        }
        let cap = self
            .initial
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        let jittered = cap.mul_f64(rand::random::<f64>());
        Some(jittered.max(floor.unwrap_or_default()))
    }
}

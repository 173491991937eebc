//! Failed logins, throttled per account and per address: a pure state machine with
//! time as a parameter (no clock, no I/O), kept in memory by the HTTP layer.
//!
//! Each key (an account name or a client address) may fail `free` times; every
//! failure after that locks the key for `base` doubled per extra failure, capped at
//! `max`. Failures older than `window` are forgotten; a success clears the key.

use std::collections::HashMap;
use std::time::Duration;

/// What is counted separately.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Account(String),
    Address(std::net::IpAddr),
}

/// Limits of one kind of key.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures allowed before locking.
    pub free: u32,
    /// The first lock.
    pub base: Duration,
    /// The longest lock.
    pub max: Duration,
    /// Failures older than this are forgotten.
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: i64,
    locked_until: i64,
}

/// Failed logins by key.
#[derive(Debug)]
pub struct Throttle {
    account: Limits,
    address: Limits,
    entries: HashMap<Key, Entry>,
    /// Bound on the keys kept (forgotten oldest-first past it).
    capacity: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(
            Limits {
                free: 5,
                base: Duration::from_secs(30),
                max: Duration::from_secs(15 * 60),
                window: Duration::from_secs(60 * 60),
            },
            Limits {
                free: 20,
                base: Duration::from_secs(30),
                max: Duration::from_secs(15 * 60),
                window: Duration::from_secs(60 * 60),
            },
        )
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Throttle {
    pub fn new(account: Limits, address: Limits) -> Self {
        Throttle {
            account,
            address,
            entries: HashMap::new(),
            capacity: 100_000,
        }
    }

    fn limits(&self, k: &Key) -> Limits {
        match k {
            Key::Account(_) => self.account,
            Key::Address(_) => self.address,
        }
    }

    /// `Err(wait)` when any of `keys` is locked at `now_ms` (Unix milliseconds).
    pub fn check(&self, keys: &[Key], now_ms: i64) -> Result<(), Duration> {
        let wait = keys
            .iter()
            .filter_map(|k| self.entries.get(k))
            .map(|e| e.locked_until - now_ms)
            .max()
            .unwrap_or(0);
        if wait > 0 {
            Err(Duration::from_millis(wait as u64))
        } else {
            Ok(())
        }
    }

    /// A failed login for each of `keys` at `now_ms`.
    pub fn failed(&mut self, keys: &[Key], now_ms: i64) {
        if self.entries.len() >= self.capacity {
            self.forget_before(now_ms - ms(self.account.window.max(self.address.window)));
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        for k in keys {
            let l = self.limits(k);
            let e = self.entries.entry(k.clone()).or_insert(Entry {
                failures: 0,
                last: now_ms,
                locked_until: 0,
            });
            if now_ms - e.last > ms(l.window) {
                e.failures = 0;
            }
            e.failures += 1;
            e.last = now_ms;
            if e.failures > l.free {
                let extra = (e.failures - l.free - 1).min(20);
                let lock = ms(l.base).saturating_mul(1 << extra).min(ms(l.max));
                e.locked_until = now_ms + lock;
            }
        }
    }

    /// A successful login: the account's failures are forgotten (the address keeps
    /// its count, so one good account does not open the door to guessing others).
    pub fn succeeded(&mut self, account: &Key) {
        self.entries.remove(account);
    }

    fn forget_before(&mut self, t: i64) {
        self.entries
            .retain(|_, e| e.last >= t || e.locked_until > t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(s: &str) -> Key {
        Key::Account(s.into())
    }

    fn addr(s: &str) -> Key {
        Key::Address(s.parse().unwrap())
    }

    #[test]
    fn an_account_locks_after_five_failures_and_backs_off() {
        let mut t = Throttle::default();
        let keys = [acc("anna"), addr("10.0.0.1")];
        for i in 0..5 {
            assert!(t.check(&keys, i * 1000).is_ok());
            t.failed(&keys, i * 1000);
        }
        // Five free failures, the sixth locks for 30 s.
        assert!(t.check(&keys, 5000).is_ok());
        t.failed(&keys, 5000);
        assert_eq!(t.check(&keys, 5000), Err(Duration::from_secs(30)));
        assert_eq!(t.check(&keys, 34_000), Err(Duration::from_secs(1)));
        assert!(t.check(&keys, 35_000).is_ok());
        // The next failure doubles the lock.
        t.failed(&keys, 35_000);
        assert_eq!(t.check(&keys, 35_000), Err(Duration::from_secs(60)));
        // Another address is locked out of the same account.
        assert!(t.check(&[acc("anna"), addr("10.0.0.2")], 36_000).is_err());
        // Another account from another address is not.
        assert!(t.check(&[acc("bruno"), addr("10.0.0.2")], 36_000).is_ok());
        // A success clears the account.
        t.succeeded(&acc("anna"));
        assert!(t.check(&[acc("anna"), addr("10.0.0.2")], 36_000).is_ok());
    }

    #[test]
    fn locks_are_capped_and_old_failures_forgotten() {
        let mut t = Throttle::default();
        let k = [acc("x")];
        for i in 0..30 {
            t.failed(&k, i);
        }
        assert_eq!(t.check(&k, 29), Err(Duration::from_secs(15 * 60)));
        // An hour and more later the count starts again.
        let later = 2 * 3600 * 1000;
        assert!(t.check(&k, later).is_ok());
        t.failed(&k, later);
        assert!(t.check(&k, later).is_ok());
    }

    #[test]
    fn an_address_guessing_many_accounts_is_locked() {
        let mut t = Throttle::default();
        let a = addr("192.0.2.7");
        for i in 0..21 {
            t.failed(&[acc(&format!("user{i}")), a.clone()], i);
        }
        assert!(t.check(&[acc("fresh"), a.clone()], 30).is_err());
        assert!(t.check(&[acc("fresh"), addr("192.0.2.8")], 30).is_ok());
    }
}

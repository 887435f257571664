//! Per-client request rate limits (GCRA, `governor`), one keyed limiter per configured limit,
//! keyed by the limit's `client_identifier`.

use std::{num::NonZeroU32, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota,
};

use super::identity::Identity;
use crate::config::{ClientIdentifier, L7RateLimit};

/// How many keys a limiter may hold before the idle ones are dropped.
const PRUNE_ABOVE: usize = 100_000;

struct Limit {
    name: String,
    identifier: ClientIdentifier,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// All configured limits.
pub struct RateLimits {
    limits: Vec<Limit>,
    clock: DefaultClock,
}

/// A request over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: String,
    pub retry_after: Duration,
}

impl RateLimits {
    pub fn new(config: &[L7RateLimit]) -> RateLimits {
        let limits = config
            .iter()
            .filter_map(|l| {
                let rpm = NonZeroU32::new(l.requests_per_minute)?;
                let burst = NonZeroU32::new(l.burst).unwrap_or(rpm);
                Some(Limit {
                    name: l.name.clone(),
                    identifier: l.identifier,
                    limiter: governor::RateLimiter::keyed(
                        Quota::per_minute(rpm).allow_burst(burst),
                    ),
                })
            })
            .collect();
        RateLimits {
            limits,
            clock: DefaultClock::default(),
        }
    }

    /// Counts a request against every limit that applies to it. A limit keyed by API key or
    /// user id does not apply to a request that has none.
    pub fn check(&self, who: &Identity) -> Result<(), Exceeded> {
        for l in &self.limits {
            let key = match l.identifier {
                ClientIdentifier::Ip => who.ip.to_string(),
                ClientIdentifier::ApiKey => match &who.api_key {
                    Some(k) => format!("k:{k}"),
                    None => continue,
                },
                ClientIdentifier::UserId => match &who.user_id {
                    Some(u) => format!("u:{u}"),
                    None => continue,
                },
            };
            if l.limiter.len() > PRUNE_ABOVE {
                l.limiter.retain_recent();
            }
            if let Err(not_until) = l.limiter.check_key(&key) {
                return Err(Exceeded {
                    limit: l.name.clone(),
                    retry_after: not_until.wait_time_from(self.clock.now()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(ip: &str, key: Option<&str>) -> Identity {
        Identity {
            ip: ip.parse().expect("literal address"),
            api_key: key.map(Into::into),
            user_id: None,
        }
    }

    #[test]
    fn burst_is_allowed_then_refused_with_a_retry_time() {
        let limits = RateLimits::new(&[L7RateLimit {
            name: "default".into(),
            requests_per_minute: 60,
            burst: 3,
            identifier: ClientIdentifier::Ip,
        }]);
        for i in 0..3 {
            assert_eq!(
                limits.check(&who("192.0.2.1", None)),
                Ok(()),
                "request {i} is in the burst"
            );
        }
        let e = limits
            .check(&who("192.0.2.1", None))
            .expect_err("the fourth request is over the burst");
        assert!(
            e.retry_after <= Duration::from_secs(1),
            "retry after {:?}",
            e.retry_after
        );
        assert_eq!(
            limits.check(&who("192.0.2.2", None)),
            Ok(()),
            "another client has its own budget"
        );
    }

    #[test]
    fn api_key_limit_skips_requests_without_a_key() {
        let limits = RateLimits::new(&[L7RateLimit {
            name: "keys".into(),
            requests_per_minute: 1,
            burst: 1,
            identifier: ClientIdentifier::ApiKey,
        }]);
        assert_eq!(limits.check(&who("192.0.2.1", Some("k1"))), Ok(()));
        assert!(
            limits.check(&who("192.0.2.9", Some("k1"))).is_err(),
            "same key, other address"
        );
        assert_eq!(limits.check(&who("192.0.2.1", None)), Ok(()));
    }
}

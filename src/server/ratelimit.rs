//! Rate limits (docs/api.md, Rate limits) with governor: per client IP on the open account routes, per account on
//! reset requests, per session on everything else except polls.

use crate::config::RateLimitConfig;
use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

/// All limiters; `None` when `rate_limit.enabled = false`.
pub struct RateLimits {
    limiters: Option<Limiters>,
}

struct Limiters {
    account_routes: DefaultKeyedRateLimiter<IpAddr>,
    reset_requests: DefaultKeyedRateLimiter<String>,
    messages: DefaultKeyedRateLimiter<u64>,
    requests: DefaultKeyedRateLimiter<u64>,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// `burst` at once, then one more every `period`.
fn quota(burst: u32, period: Duration) -> Quota {
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(nonzero(burst))
}

fn per_second(burst: u32, rate: u32) -> Quota {
    Quota::per_second(nonzero(rate)).allow_burst(nonzero(burst))
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        let limiters = config.enabled.then(|| Limiters {
            account_routes: RateLimiter::keyed(quota(
                config.account_burst,
                config.account_interval,
            )),
            reset_requests: RateLimiter::keyed(Quota::per_hour(nonzero(
                config.reset_requests_per_hour,
            ))),
            messages: RateLimiter::keyed(per_second(
                config.message_burst,
                config.messages_per_second,
            )),
            requests: RateLimiter::keyed(per_second(
                config.request_burst,
                config.requests_per_second,
            )),
        });
        RateLimits { limiters }
    }

    /// register, login, authorize, requestResetPassword, resetPassword: per client IP.
    pub fn account_route(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check(|l| &l.account_routes, &limit_key(ip))
    }

    /// requestResetPassword per account name, known or not (the answer must not tell which).
    pub fn reset_request(&self, user_key: &str) -> Result<(), ApiError> {
        self.check(|l| &l.reset_requests, &user_key.to_owned())
    }

    /// postMessage per session.
    pub fn message(&self, session: u64) -> Result<(), ApiError> {
        self.check(|l| &l.messages, &session)
    }

    /// Other authenticated requests except polls, per session.
    pub fn request(&self, session: u64) -> Result<(), ApiError> {
        self.check(|l| &l.requests, &session)
    }

    fn check<K: Hash + Eq + Clone>(
        &self,
        pick: impl Fn(&Limiters) -> &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), ApiError> {
        let Some(limiters) = &self.limiters else {
            return Ok(());
        };
        pick(limiters).check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Round up: a client that waits exactly Retry-After seconds must get through.
            ApiError::TooManyRequests(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }

    /// Drops state of keys that are back to a full burst, so memory follows active clients only.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.limiters {
            l.account_routes.retain_recent();
            l.reset_requests.retain_recent();
            l.messages.retain_recent();
            l.requests.retain_recent();
        }
    }
}

/// The address a per-IP limit counts: IPv4 as it is, IPv6 by its /64 prefix, since one host
/// usually holds a whole /64 and could otherwise rotate through it.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra: &str) -> Config {
        crate::config::from_toml_str(extra, true).unwrap()
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_prefix() {
        let limits = RateLimits::new(
            &config("[rate_limit]\naccount_burst = 2\naccount_interval = \"10s\"").rate_limit,
        );
        let hosts = [
            "2001:db8:1:2::1",
            "2001:db8:1:2:ffff::9",
            "2001:db8:1:2:abcd::",
        ];
        let results: Vec<bool> = hosts
            .iter()
            .map(|h| limits.account_route(h.parse().unwrap()).is_ok())
            .collect();
        assert_eq!(results, [true, true, false]);
        assert!(
            limits
                .account_route("2001:db8:1:3::1".parse().unwrap())
                .is_ok()
        );
        assert_eq!(
            limit_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bursts_trip_and_report_a_retry_time() {
        let limits = RateLimits::new(
            &config("[rate_limit]\naccount_burst = 2\naccount_interval = \"10s\"").rate_limit,
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.account_route(ip).is_ok());
        assert!(limits.account_route(ip).is_ok());
        match limits.account_route(ip) {
            Err(ApiError::TooManyRequests(secs)) => assert!((1..=10).contains(&secs)),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limits.account_route("192.0.2.2".parse().unwrap()).is_ok());
        let off = RateLimits::new(&config("[rate_limit]\nenabled = false").rate_limit);
        for _ in 0..100 {
            assert!(off.account_route(ip).is_ok());
        }
    }
}

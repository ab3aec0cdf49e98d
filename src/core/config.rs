//! The settings the core consults per request, and their checks.

use std::time::Duration;

use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result};
use crate::health::Policy;
use crate::ring::Distribution;

/// The default largest value, 1 MiB (memcached's default item size).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;

/// The largest `max_value_size` accepted, 1 GiB (memcached's own `-I`
/// limit).
pub const MAX_VALUE_SIZE_LIMIT: usize = 1024 * 1024 * 1024;

/// The longest duration any setting keeps; longer ones (up to
/// `Duration::MAX`) are clamped to it, so that no deadline computed from
/// them can overflow. 30 days.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Settings the client consults per request (the rest live with each
/// driver's connections).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub distribution: Distribution,
    pub policy: Policy,
    pub max_attempts: u32,
    pub failover_ttl: Option<Duration>,
    pub flush_on_rejoin: bool,
    pub rejoin_hints: usize,
    pub max_value_size: usize,
    pub lease_ttl: Duration,
    pub lease_wait: Duration,
    pub codec: Codec,
    pub replicas: usize,
    pub miss_failover: bool,
    /// Keys that are not text keys travel base64 (meta only).
    pub binary_keys: bool,
}

impl Config {
    /// Refuses settings no request could work with, as
    /// [`ErrorKind::InvalidConfig`].
    pub fn check(&self) -> Result<()> {
        let invalid = |m: &str| Err(Error::new(ErrorKind::InvalidConfig, m.to_owned()));
        if self.replicas == 0 {
            return invalid("replicas must be at least 1");
        }
        if self.max_attempts == 0 || self.policy.failure_limit == 0 {
            return invalid("max_attempts and failure_limit must be at least 1");
        }
        if self.max_value_size > MAX_VALUE_SIZE_LIMIT {
            return invalid("max_value_size is above 1 GiB");
        }
        Ok(())
    }
}

/// The defaults of every per-request setting: the builder starts from
/// them, and the core's tests use them as they are.
impl Default for Config {
    fn default() -> Config {
        Config {
            distribution: Distribution::Ketama,
            policy: Policy {
                failure_limit: 2,
                retry_timeout: Duration::from_secs(2),
            },
            max_attempts: 2,
            failover_ttl: Some(Duration::from_secs(60)),
            flush_on_rejoin: false,
            rejoin_hints: crate::hints::DEFAULT_REJOIN_HINTS,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            lease_ttl: Duration::from_secs(30),
            lease_wait: Duration::from_secs(2),
            codec: Codec::raw(),
            replicas: 1,
            miss_failover: false,
            binary_keys: false,
        }
    }
}

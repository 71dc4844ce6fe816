//! Raw settings (flags, environment) → validated, typed configuration, once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("failed to parse duration {input:?}: expected a number with a unit, e.g. 500ms, 10s, 5m, 1h")]
    Duration { input: String },
    #[error("{name} must be between {min:?} and {max:?}, got {value:?}")]
    DurationRange { name: &'static str, value: Duration, min: Duration, max: Duration },
    #[error("--max-body-bytes must be between 1024 and 67108864, got {0}")]
    BodyLimit(usize),
    #[error("--tls-cert and --tls-key go together")]
    HalfTlsPair,
    #[error("{name} must be between {min} and {max}, got {value}")]
    CountRange { name: &'static str, value: usize, min: usize, max: usize },
}

fn count_in_range(name: &'static str, value: usize, min: usize, max: usize) -> Result<usize, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::CountRange { name, value, min, max });
    }
    Ok(value)
}

/// Parses `500ms`, `10s`, `5m`, `1h`, or a combination such as `1m30s`.
pub fn parse_duration(input: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration { input: input.to_owned() };
    let s = input.trim();
    if s.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(part).ok_or_else(err)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

pub fn in_range(name: &'static str, value: Duration, min: Duration, max: Duration) -> Result<Duration, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::DurationRange { name, value, min, max });
    }
    Ok(value)
}

/// Validated settings of `gitgate serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub cert_dir: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Generate a development certificate when the files are missing
    /// (only for the default paths under `cert_dir`).
    pub generate_certs: bool,
    pub tls_reload_interval: Duration,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    pub max_body_bytes: usize,
    pub drain_timeout: Duration,
    pub overload: Overload,
}

/// Bounds under load (`--max-in-flight`, `--max-queue`, `--queue-timeout`,
/// `--max-connections`, `--max-handshakes`, `--http2-max-streams`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overload {
    pub max_in_flight: usize,
    pub max_queue: usize,
    pub queue_timeout: Duration,
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub http2_max_streams: u32,
}

/// Raw bounds under load, as they come from flags.
pub struct RawOverload<'a> {
    pub max_in_flight: usize,
    pub max_queue: usize,
    pub queue_timeout: &'a str,
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub http2_max_streams: usize,
}

impl Overload {
    pub fn from_raw(raw: RawOverload<'_>) -> Result<Self, ConfigError> {
        Ok(Overload {
            max_in_flight: count_in_range("--max-in-flight", raw.max_in_flight, 1, 65_536)?,
            max_queue: count_in_range("--max-queue", raw.max_queue, 0, 1_000_000)?,
            queue_timeout: in_range(
                "--queue-timeout",
                parse_duration(raw.queue_timeout)?,
                Duration::ZERO,
                Duration::from_secs(60),
            )?,
            max_connections: count_in_range("--max-connections", raw.max_connections, 1, 1_000_000)?,
            max_handshakes: count_in_range("--max-handshakes", raw.max_handshakes, 1, 65_536)?,
            http2_max_streams: count_in_range("--http2-max-streams", raw.http2_max_streams, 1, 10_000)? as u32,
        })
    }
}

/// Raw values as they come from flags.
pub struct RawServe<'a> {
    pub listen: SocketAddr,
    pub cert_dir: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_reload_interval: &'a str,
    pub request_timeout: &'a str,
    pub header_timeout: &'a str,
    pub max_body_bytes: usize,
    pub drain_timeout: &'a str,
    pub overload: RawOverload<'a>,
}

impl ServeConfig {
    pub fn from_raw(raw: RawServe<'_>) -> Result<Self, ConfigError> {
        let secs = Duration::from_secs;
        let (tls_cert, tls_key, generate_certs) = match (raw.tls_cert, raw.tls_key) {
            (Some(c), Some(k)) => (c, k, false),
            (None, None) => {
                (raw.cert_dir.join(crate::tls::SERVING_CERT), raw.cert_dir.join(crate::tls::SERVING_KEY), true)
            }
            _ => return Err(ConfigError::HalfTlsPair),
        };
        if !(1024..=64 * 1024 * 1024).contains(&raw.max_body_bytes) {
            return Err(ConfigError::BodyLimit(raw.max_body_bytes));
        }
        let ms = Duration::from_millis;
        Ok(ServeConfig {
            listen: raw.listen,
            cert_dir: raw.cert_dir,
            tls_cert,
            tls_key,
            generate_certs,
            tls_reload_interval: in_range(
                "--tls-reload-interval",
                parse_duration(raw.tls_reload_interval)?,
                ms(100),
                secs(3600),
            )?,
            request_timeout: in_range("--request-timeout", parse_duration(raw.request_timeout)?, ms(10), secs(300))?,
            header_timeout: in_range("--header-timeout", parse_duration(raw.header_timeout)?, ms(10), secs(300))?,
            max_body_bytes: raw.max_body_bytes,
            drain_timeout: in_range("--drain-timeout", parse_duration(raw.drain_timeout)?, Duration::ZERO, secs(600))?,
            overload: Overload::from_raw(raw.overload)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "10", "s", "10x", "-1s", "1.5s", "99999999999999999999s", "18446744073709551615h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    fn raw() -> RawServe<'static> {
        RawServe {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_dir: "certs".into(),
            tls_cert: None,
            tls_key: None,
            tls_reload_interval: "10s",
            request_timeout: "10s",
            header_timeout: "10s",
            max_body_bytes: 4 << 20,
            drain_timeout: "15s",
            overload: RawOverload {
                max_in_flight: 64,
                max_queue: 1024,
                queue_timeout: "1s",
                max_connections: 1024,
                max_handshakes: 256,
                http2_max_streams: 100,
            },
        }
    }

    #[test]
    fn serve_config_validates_once() {
        let c = ServeConfig::from_raw(raw()).unwrap();
        assert!(c.generate_certs);
        assert_eq!(c.tls_cert, PathBuf::from("certs/tls.crt"));
        let c =
            ServeConfig::from_raw(RawServe { tls_cert: Some("a".into()), tls_key: Some("b".into()), ..raw() }).unwrap();
        assert!(!c.generate_certs, "explicit paths are never generated");
        assert_eq!(
            ServeConfig::from_raw(RawServe { tls_cert: Some("a".into()), ..raw() }).unwrap_err(),
            ConfigError::HalfTlsPair
        );
        assert!(matches!(
            ServeConfig::from_raw(RawServe { request_timeout: "0s", ..raw() }),
            Err(ConfigError::DurationRange { name: "--request-timeout", .. })
        ));
        assert_eq!(
            ServeConfig::from_raw(RawServe { max_body_bytes: 10, ..raw() }).unwrap_err(),
            ConfigError::BodyLimit(10)
        );
        let overload = |f: fn(&mut RawOverload<'static>)| {
            let mut r = raw();
            f(&mut r.overload);
            ServeConfig::from_raw(r).map(|c| c.overload)
        };
        assert_eq!(overload(|_| {}).unwrap().queue_timeout, Duration::from_secs(1));
        assert!(matches!(
            overload(|o| o.max_in_flight = 0),
            Err(ConfigError::CountRange { name: "--max-in-flight", .. })
        ));
        assert!(matches!(
            overload(|o| o.http2_max_streams = 0),
            Err(ConfigError::CountRange { name: "--http2-max-streams", .. })
        ));
        assert!(matches!(
            overload(|o| o.queue_timeout = "2m"),
            Err(ConfigError::DurationRange { name: "--queue-timeout", .. })
        ));
    }
}

//! TLS material: development certificates (`gitgate certs`), the rustls
//! server configuration (TLS 1.2/1.3, ALPN h2 + http/1.1, optionally
//! verifying client certificates against a CA), the verified caller of a
//! connection ([`Peer`]), and hot reload of the files from disk.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// File names under the certificate directory (those of a
/// `kubernetes.io/tls` Secret volume, so cert-manager output mounts as is).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVING_CERT: &str = "tls.crt";
pub const SERVING_KEY: &str = "tls.key";

/// Names the development serving certificate covers when none are given.
pub const DEFAULT_DNS_NAMES: &[&str] =
    &["localhost", "gitgate", "gitgate.gitgate", "gitgate.gitgate.svc", "gitgate.gitgate.svc.cluster.local"];
pub const DEFAULT_IPS: &[&str] = &["127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse PEM in {path}: {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("failed to build the TLS server configuration from {cert} and {key}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("failed to use {path} as the client CA")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("failed to generate a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("{name:?} is not a valid DNS name or IP address")]
    BadName { name: String },
}

/// What `gitgate certs` wrote.
pub struct GeneratedCerts {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// base64 of the CA certificate PEM: a webhook configuration's `caBundle`.
    pub ca_bundle: String,
}

/// Generates a development CA and a serving certificate signed by it for
/// `names` (DNS names and IP addresses), valid for `days`, under `dir`.
/// An existing CA in `dir` is reused, so clients that trust it keep working.
pub fn generate(dir: &Path, names: &[String], days: u32) -> Result<GeneratedCerts, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    for name in names {
        if name.parse::<IpAddr>().is_err() && !valid_dns_name(name) {
            return Err(TlsError::BadName { name: name.clone() });
        }
    }
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    // The CA's parameters are rebuilt from constants: with the same key they
    // yield the same issuer name and key identifier as the CA on disk.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "gitgate development CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let (ca_pem, issuer) = match (std::fs::read_to_string(&ca_cert_path), std::fs::read_to_string(&ca_key_path)) {
        // An expired CA is replaced: nothing verifies a certificate it signs.
        (Ok(cert), Ok(key)) if validity(cert.as_bytes()).is_none_or(|(_, until)| until > unix_now()) => {
            let key = KeyPair::from_pem(&key).map_err(TlsError::Generate)?;
            (cert, Issuer::new(ca_params, key))
        }
        _ => {
            let key = KeyPair::generate().map_err(TlsError::Generate)?;
            set_validity(&mut ca_params, 3650);
            let cert = ca_params.self_signed(&key).map_err(TlsError::Generate)?;
            write_file(&ca_cert_path, cert.pem().as_bytes(), false)?;
            write_file(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
            (cert.pem(), Issuer::new(ca_params, key))
        }
    };

    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(TlsError::Generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or("gitgate"));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, days);
    let cert = params.signed_by(&key, &issuer).map_err(TlsError::Generate)?;

    let serving_cert = dir.join(SERVING_CERT);
    let serving_key = dir.join(SERVING_KEY);
    // Key first, then certificate: a reloader that sees the new certificate
    // also sees its key.
    write_file(&serving_key, key.serialize_pem().as_bytes(), true)?;
    write_file(&serving_cert, cert.pem().as_bytes(), false)?;
    use base64::Engine as _;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    Ok(GeneratedCerts { ca_cert: ca_cert_path, serving_cert, serving_key, ca_bundle })
}

/// The development pair `gitgate serve` keeps in `--cert-dir` when no
/// `--tls-cert`/`--tls-key` is given: generated when missing, and renewed
/// (with the CA in the directory; a new CA when that one expired) once a
/// third of its lifetime is left or it expired — at start and at every
/// reload round, so a gitgate that was down past its certificate's end, or
/// runs that long, serves a valid certificate again by itself. Only while
/// the directory holds the CA's key (a pair from cert-manager or another
/// issuer is never replaced).
#[derive(Clone, Debug)]
pub struct DevPair {
    pub dir: PathBuf,
    /// Names a renewed certificate covers beside the DNS names of the one
    /// it replaces.
    pub names: Vec<String>,
    pub days: u32,
}

impl DevPair {
    /// The defaults of `gitgate serve`: [`DEFAULT_DNS_NAMES`] and
    /// [`DEFAULT_IPS`], 365 days.
    pub fn new(dir: &Path) -> DevPair {
        let names = DEFAULT_DNS_NAMES.iter().chain(DEFAULT_IPS).map(|s| s.to_string()).collect();
        DevPair { dir: dir.to_path_buf(), names, days: 365 }
    }

    /// Generates or renews the pair when due; says what it did.
    pub fn ensure(&self) -> Result<Option<Renewed>, TlsError> {
        let cert = self.dir.join(SERVING_CERT);
        if !cert.exists() || !self.dir.join(SERVING_KEY).exists() {
            generate(&self.dir, &self.names, self.days)?;
            return Ok(Some(Renewed::Generated));
        }
        if !self.dir.join(CA_KEY).exists() {
            return Ok(None);
        }
        let pem = std::fs::read(&cert).map_err(|source| TlsError::Read { path: cert.clone(), source })?;
        let Some((from, until)) = validity(&pem) else { return Ok(None) };
        if !renewal_due(from, until, unix_now()) {
            return Ok(None);
        }
        // The DNS names it had (DEFAULT_IPS cover the addresses it serves on).
        let mut names = self.names.clone();
        for der in CertificateDer::pem_slice_iter(&pem).take(1).flatten() {
            for n in certificate_names(&der) {
                if valid_dns_name(&n) && !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        generate(&self.dir, &names, self.days)?;
        Ok(Some(if until <= unix_now() { Renewed::Expired { until } } else { Renewed::Expiring { until } }))
    }
}

/// What [`DevPair::ensure`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewed {
    /// There was none.
    Generated,
    /// It had expired at `until` (seconds since the epoch).
    Expired { until: u64 },
    /// A third of its lifetime or less was left.
    Expiring { until: u64 },
}

/// Whether a certificate valid `from..until` (seconds since the epoch) is
/// due for renewal at `now`: a third of its lifetime or less is left.
pub fn renewal_due(from: u64, until: u64, now: u64) -> bool {
    let left = until.saturating_sub(now);
    left == 0 || left.saturating_mul(3) <= until.saturating_sub(from)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `notBefore` and `notAfter` (seconds since the epoch) of the first
/// certificate in `pem`; `None` when there is none or it is malformed.
pub fn validity(pem: &[u8]) -> Option<(u64, u64)> {
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (tag, cert, _) = der_tlv(der.as_ref())?;
    let (tbs_tag, tbs, _) = der_tlv(cert)?;
    if tag != 0x30 || tbs_tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, validity
    let (first, _, after) = der_tlv(rest)?;
    if first == 0xa0 {
        rest = after;
    }
    for want in [0x02, 0x30, 0x30] {
        let (t, _, after) = der_tlv(rest)?;
        if t != want {
            return None;
        }
        rest = after;
    }
    let (t, validity, _) = der_tlv(rest)?;
    if t != 0x30 {
        return None;
    }
    let (t1, from, rest) = der_tlv(validity)?;
    let (t2, until, _) = der_tlv(rest)?;
    Some((der_time(t1, from)?, der_time(t2, until)?))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// seconds since the epoch.
fn der_time(tag: u8, text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec;
    u64::try_from(secs).ok()
}

/// (year, month, day) → days since 1970-01-01 (the inverse of
/// [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 1123 host name, optionally with one leading `*.` wildcard label.
fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let today = (now / 86_400) as i64;
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + i64::from(days));
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write as _;
    let err = |source| TlsError::Write { path: path.to_path_buf(), source };
    // Write beside, then rename: a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Reads a certificate chain and its private key and builds the server
/// configuration: TLS 1.3 and 1.2 only, ALPN h2 then http/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let files = Files { cert: cert.to_path_buf(), key: key.to_path_buf(), client_ca: None };
    Ok(files.read()?.1)
}

/// The files a server configuration is built from.
#[derive(Clone, Debug)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to (`--client-ca`).
    pub client_ca: Option<PathBuf>,
}

impl Files {
    /// Reads the files: the hash of their bytes and the configuration.
    fn read(&self) -> Result<([u8; 32], Arc<ServerConfig>), TlsError> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source });
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let ca_pem = self.client_ca.as_deref().map(read).transpose()?;
        let mut h = Sha256::new();
        h.update(&cert_pem);
        h.update(&key_pem);
        if let Some(ca) = &ca_pem {
            h.update(ca);
        }
        let hash: [u8; 32] = h.finalize().into();
        let client = match (&self.client_ca, &ca_pem) {
            (Some(path), Some(pem)) => Some(client_verifier(path, pem)?),
            _ => None,
        };
        Ok((hash, server_config_from_pem(&cert_pem, &key_pem, &self.cert, &self.key, client)?))
    }
}

/// Verifies client certificates against the CA in `pem`. A client without
/// a certificate still completes the handshake (health probes have none);
/// the routes that need a caller refuse it. A certificate that does not
/// chain to the CA, or is expired, fails the handshake.
fn client_verifier(path: &Path, pem: &[u8]) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem { path: path.to_path_buf(), what: "malformed certificate" })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), what: "no certificate" });
    }
    for c in certs {
        roots.add(c).map_err(|_| TlsError::Pem { path: path.to_path_buf(), what: "not a CA certificate" })?;
    }
    rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|source| TlsError::ClientCa { path: path.to_path_buf(), source })
}

/// Who is at the other end of a connection, as TLS proved it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Peer {
    /// No client certificate (or no TLS at all).
    #[default]
    Anonymous,
    /// A client certificate that chains to `--client-ca`: its common name
    /// first, then its DNS subject alternative names.
    Verified { names: Arc<[String]> },
}

impl Peer {
    /// The peer of an established server connection. rustls only keeps
    /// certificates it verified, so any certificate here is trusted.
    pub fn of(conn: &rustls::ServerConnection) -> Peer {
        match conn.peer_certificates().and_then(<[_]>::first) {
            Some(leaf) => Peer::Verified { names: certificate_names(leaf).into() },
            None => Peer::Anonymous,
        }
    }
}

/// The common name and DNS subject alternative names of a certificate.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else { return Vec::new() };
    let mut names: Vec<String> = common_name(ee.subject()).into_iter().collect();
    for dns in ee.valid_dns_names() {
        if !names.iter().any(|n| n == dns) {
            names.push(dns.to_owned());
        }
    }
    names
}

/// The first commonName (2.5.4.3) of a DER Name's contents (a sequence of
/// RDN sets), as UTF-8; `None` when absent or malformed.
fn common_name(mut rdns: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while !rdns.is_empty() {
        let (tag, set, rest) = der_tlv(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        let mut atvs = set;
        while !atvs.is_empty() {
            let (tag, atv, rest) = der_tlv(atvs)?;
            atvs = rest;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = der_tlv(atv)?;
            if oid_tag == 0x06 && oid == CN {
                let (_, text, _) = der_tlv(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// One DER tag-length-value: (tag, value, rest). Short and long lengths
/// up to four bytes; anything else is malformed.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, tail) = rest.split_at(n);
        rest = tail;
        bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (value, tail) = rest.split_at(len);
    Some((tag, value, tail))
}

fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
    client: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem { path: cert.to_path_buf(), what: "malformed certificate" })?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: cert.to_path_buf(), what: "no certificate" });
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| TlsError::Pem { path: key.to_path_buf(), what: "no private key" })?;
    let builder = ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    let builder = match client {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, private).map_err(|source| TlsError::Config {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Watches the certificate and key files and swaps the served configuration
/// when their content changes. Polling, not inotify: Kubernetes updates a
/// Secret volume by swapping a `..data` symlink, which inotify watchers on
/// the files miss. Open connections keep their session; new handshakes get
/// the new certificate.
pub struct Reloader {
    files: Files,
    config: RustlsConfig,
    last: [u8; 32],
    /// Renews the development pair the files are (when they are).
    renew: Option<DevPair>,
}

impl Reloader {
    /// Loads the files once and returns the served config and its reloader.
    pub fn load(cert: &Path, key: &Path) -> Result<(RustlsConfig, Reloader), TlsError> {
        Self::load_files(Files { cert: cert.to_path_buf(), key: key.to_path_buf(), client_ca: None })
    }

    /// Like [`Reloader::load`], with a client CA that is reloaded too.
    pub fn load_files(files: Files) -> Result<(RustlsConfig, Reloader), TlsError> {
        let (hash, config) = files.read()?;
        let rustls = RustlsConfig::from_config(config);
        Ok((rustls.clone(), Reloader { files, config: rustls, last: hash, renew: None }))
    }

    /// Also renew `pair` (the files' development pair) at every round.
    pub fn renewing(mut self, pair: DevPair) -> Reloader {
        self.renew = Some(pair);
        self
    }

    /// Checks the files once (renewing the development pair first when it
    /// is due); returns whether the served config changed. A half-written
    /// or mismatched pair is reported and the old config kept.
    pub fn check(&mut self) -> Result<bool, TlsError> {
        // A renewal that fails (a read-only directory) never stops the
        // reload of what is there.
        match self.renew.as_ref().map(|pair| (pair, pair.ensure())) {
            Some((pair, Ok(Some(done)))) => log_renewal(&pair.dir, done),
            Some((pair, Err(e))) => {
                tracing::warn!(dir = %pair.dir.display(), error = %crate::error_chain(&e), "failed to renew the development certificate")
            }
            _ => {}
        }
        let (hash, config) = self.files.read()?;
        if hash == self.last {
            return Ok(false);
        }
        self.config.reload_from_config(config);
        self.last = hash;
        Ok(true)
    }

    /// Polls every `interval` until the task is dropped.
    pub async fn run(mut self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.check() {
                Ok(true) => tracing::info!(cert = %self.files.cert.display(), "reloaded TLS certificate"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %crate::error_chain(&e), "keeping the current TLS certificate"),
            }
        }
    }
}

/// Logs what [`DevPair::ensure`] did.
pub fn log_renewal(dir: &Path, done: Renewed) {
    let at = |t: u64| crate::clock::format_rfc3339_micros(i64::try_from(t).unwrap_or(i64::MAX / 1_000_000) * 1_000_000);
    match done {
        Renewed::Generated => tracing::info!(dir = %dir.display(), "generated a development certificate"),
        Renewed::Expired { until } => {
            tracing::warn!(dir = %dir.display(), expired = %at(until), "renewed the expired development certificate")
        }
        Renewed::Expiring { until } => {
            tracing::info!(dir = %dir.display(), expires = %at(until), "renewed the development certificate")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn generated_pair_loads_and_ca_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = generate(dir.path(), &names, 30).unwrap();
        server_config(&first.serving_cert, &first.serving_key).unwrap();
        let ca1 = std::fs::read(&first.ca_cert).unwrap();
        let second = generate(dir.path(), &names, 30).unwrap();
        assert_eq!(ca1, std::fs::read(&second.ca_cert).unwrap(), "the CA must be kept");
        assert_eq!(first.ca_bundle, second.ca_bundle);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&first.serving_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "private key must not be group/world readable");
        }
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let out = generate(dir.path(), &["localhost".into()], 30).unwrap();
        let (from, until) = validity(&std::fs::read(&out.serving_cert).unwrap()).unwrap();
        let today = unix_now() / 86_400 * 86_400;
        assert_eq!(from, today - 86_400, "valid from yesterday");
        assert_eq!(until, today + 30 * 86_400);
        assert_eq!(days_from_civil(2026, 11, 21), 20_778);
        assert_eq!(der_time(0x17, b"491231235959Z"), Some(days_from_civil(2049, 12, 31) as u64 * 86_400 + 86_399));
        assert_eq!(der_time(0x18, b"19700101000000Z"), Some(0));
        for bad in [&b"2401010000Z"[..], b"240101000000", b"24130100000aZ", b""] {
            assert_eq!(der_time(0x17, bad), None);
        }
        assert_eq!(validity(b"not pem"), None);
        assert!(renewal_due(0, 300, 200) && renewal_due(0, 300, 300) && renewal_due(0, 300, 1000));
        assert!(!renewal_due(0, 300, 199));
    }

    /// Regression (webhook lockout by an expired certificate): serve only
    /// generated the development pair when it was missing, so an expired
    /// one was served for ever and the apiserver refused to call gitgate.
    #[test]
    fn an_expired_development_certificate_is_renewed_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pair = DevPair::new(dir.path());
        assert_eq!(pair.ensure().unwrap(), Some(Renewed::Generated));
        assert_eq!(pair.ensure().unwrap(), None, "a fresh pair is left alone");
        let ca = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        // `gitgate certs --days 0`: valid until today 00:00, expired.
        let expired = generate(dir.path(), &["localhost".into(), "extra.example".into()], 0).unwrap();
        let (rustls, reloader) = Reloader::load(&expired.serving_cert, &dir.path().join(SERVING_KEY)).unwrap();
        drop(rustls);
        let mut reloader = reloader.renewing(pair.clone());
        assert!(reloader.check().unwrap(), "the renewed pair is served");
        let pem = std::fs::read(dir.path().join(SERVING_CERT)).unwrap();
        let (_, until) = validity(&pem).unwrap();
        assert!(until > unix_now() + 300 * 86_400, "valid for a year again");
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca, "the CA is kept");
        let der = CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
        let names = certificate_names(&der);
        assert!(names.iter().any(|n| n == "extra.example") && names.iter().any(|n| n == "gitgate.gitgate.svc"));
        // A pair whose CA key is not here (cert-manager's) is never replaced.
        generate(dir.path(), &["localhost".into()], 0).unwrap();
        std::fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        let before = std::fs::read(dir.path().join(SERVING_CERT)).unwrap();
        assert_eq!(pair.ensure().unwrap(), None);
        assert_eq!(std::fs::read(dir.path().join(SERVING_CERT)).unwrap(), before);
    }

    #[test]
    fn a_renewal_that_fails_never_stops_the_reload() {
        let dir = tempfile::tempdir().unwrap();
        let expired = generate(dir.path(), &["localhost".into()], 0).unwrap();
        let (_, reloader) = Reloader::load(&expired.serving_cert, &expired.serving_key).unwrap();
        let mut reloader = reloader.renewing(DevPair::new(dir.path()));
        // The CA's key cannot be used: renewing fails, reported, not an error.
        std::fs::write(dir.path().join(CA_KEY), "not a key").unwrap();
        assert!(!reloader.check().unwrap());
        // A pair someone else puts there is still picked up.
        let other = tempfile::tempdir().unwrap();
        let fresh = generate(other.path(), &["localhost".into()], 30).unwrap();
        std::fs::copy(&fresh.serving_key, &expired.serving_key).unwrap();
        std::fs::copy(&fresh.serving_cert, &expired.serving_cert).unwrap();
        assert!(reloader.check().unwrap());
    }

    #[test]
    fn an_expired_ca_is_replaced_when_generating() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let old = params.self_signed(&key).unwrap().pem();
        std::fs::write(dir.path().join(CA_CERT), &old).unwrap();
        std::fs::write(dir.path().join(CA_KEY), key.serialize_pem()).unwrap();
        let out = generate(dir.path(), &["localhost".into()], 30).unwrap();
        let new = std::fs::read_to_string(&out.ca_cert).unwrap();
        assert_ne!(new, old);
        assert!(validity(new.as_bytes()).unwrap().1 > unix_now());
        server_config(&out.serving_cert, &out.serving_key).unwrap();
    }

    #[test]
    fn common_names_of_malformed_subjects_are_none_never_a_panic() {
        // A well-formed Name: SET { SEQUENCE { OID 2.5.4.3, UTF8String "api" } }
        let good = [0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'a', b'p', b'i'];
        assert_eq!(common_name(&good).as_deref(), Some("api"));
        // Every truncation and a sweep of byte flips: an answer or None.
        for cut in 0..good.len() {
            let _ = common_name(&good[..cut]);
        }
        for i in 0..good.len() {
            for b in [0x00, 0x7f, 0x80, 0x81, 0x84, 0x85, 0xff] {
                let mut bad = good;
                bad[i] = b;
                let _ = common_name(&bad);
            }
        }
        assert_eq!(common_name(&[0x31, 0x84, 0xff, 0xff, 0xff, 0xff]), None, "a length past the input");
        assert_eq!(common_name(&[0x30, 0x00]), None, "not a SET");
    }

    #[test]
    fn bad_names_and_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(generate(dir.path(), &["bad name!".into()], 1), Err(TlsError::BadName { .. })));
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "not pem").unwrap();
        assert!(matches!(server_config(&cert, &cert), Err(TlsError::Pem { .. })));
        assert!(matches!(server_config(&dir.path().join("missing"), &cert), Err(TlsError::Read { .. })));
    }
}

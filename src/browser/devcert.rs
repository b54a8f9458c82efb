//! The browser-trusted development certificate for WebTransport.
//!
//! Browsers accept a self-signed certificate only through
//! `serverCertificateHashes`, and only if it is an X.509v3 certificate with an
//! ECDSA P-256 key valid for at most 14 days. [`BrowserCertStore`] issues such
//! a certificate, renews it before it expires ([`BrowserCertStore::renew_if_due`],
//! driven by [`run_renewal`]), presents it to `h3` connections
//! ([`AlpnCertResolver`]) and publishes its SHA-256 ([`certificate_router`]:
//! `GET /certificate.sha256`, CORS allowed). The private key never leaves
//! memory.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::crypto::ring::sign::any_ecdsa_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::clock::Clock;

/// The longest validity browsers accept for `serverCertificateHashes`.
pub const MAX_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);
/// How far back `notBefore` is set, for clients whose clock is behind.
pub const BACKDATE: Duration = Duration::from_secs(3600);
/// The validity issued: `notAfter − notBefore`, under [`MAX_VALIDITY`].
pub const VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// A certificate is renewed once less than this remains of its validity.
pub const RENEW_BEFORE: Duration = Duration::from_secs(3 * 24 * 3600);

/// The ALPN of HTTP/3, which WebTransport uses.
pub const ALPN_H3: &[u8] = b"h3";

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// Key generation or signing failed.
    #[error("cannot issue the WebTransport development certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// rustls refused the generated key.
    #[error("cannot load the WebTransport development key: {0}")]
    Key(#[from] rustls::Error),
    /// The clock is outside what a certificate can state.
    #[error("the clock reads an impossible time ({0} ms since 1970)")]
    Clock(u64),
}

/// One issued certificate.
pub struct BrowserCert {
    /// The certificate and key for rustls.
    pub certified: Arc<CertifiedKey>,
    /// Lowercase hex SHA-256 of the DER certificate.
    pub sha256_hex: String,
    /// `notBefore`, unix seconds.
    pub not_before: u64,
    /// `notAfter`, unix seconds.
    pub not_after: u64,
}

impl fmt::Debug for BrowserCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowserCert")
            .field("sha256_hex", &self.sha256_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl BrowserCert {
    /// Issues a self-signed ECDSA P-256 certificate for `names` (DNS names
    /// or IP addresses), valid from `now − BACKDATE` for [`VALIDITY`].
    pub fn issue(names: &[String], now_unix: u64) -> Result<Self, DevCertError> {
        let not_before = now_unix.saturating_sub(BACKDATE.as_secs());
        let not_after = not_before + VALIDITY.as_secs();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, "georelay WebTransport (development)");
        params.distinguished_name = subject;
        params.not_before = offset(not_before)?;
        params.not_after = offset(not_after)?;
        let cert = params.self_signed(&key)?;
        let der: CertificateDer<'static> = cert.der().clone();
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let sha256_hex = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = any_ecdsa_type(&private)?;
        Ok(Self {
            certified: Arc::new(CertifiedKey::new(vec![der], signing)),
            sha256_hex,
            not_before,
            not_after,
        })
    }

    /// The DER certificate.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.certified.cert[0]
    }

    /// Whether it should be replaced at `now_unix`.
    pub fn due(&self, now_unix: u64) -> bool {
        now_unix.saturating_add(RENEW_BEFORE.as_secs()) >= self.not_after
    }
}

fn offset(unix: u64) -> Result<time::OffsetDateTime, DevCertError> {
    i64::try_from(unix)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or(DevCertError::Clock(unix.saturating_mul(1000)))
}

/// The node's current browser certificate, replaced on renewal.
#[derive(Debug)]
pub struct BrowserCertStore {
    names: Vec<String>,
    current: RwLock<Arc<BrowserCert>>,
}

impl BrowserCertStore {
    /// Issues the first certificate for `names` (e.g. the node's listen IP).
    pub fn new(names: Vec<String>, now_unix: u64) -> Result<Self, DevCertError> {
        let cert = BrowserCert::issue(&names, now_unix)?;
        Ok(Self {
            names,
            current: RwLock::new(Arc::new(cert)),
        })
    }

    /// The certificate in use.
    pub fn current(&self) -> Arc<BrowserCert> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the certificate if it is due at `now_unix`; returns whether
    /// it did. Sessions on the old certificate are not affected.
    pub fn renew_if_due(&self, now_unix: u64) -> Result<bool, DevCertError> {
        if !self.current().due(now_unix) {
            return Ok(false);
        }
        let fresh = Arc::new(BrowserCert::issue(&self.names, now_unix)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(true)
    }

    /// How long until the current certificate is due, from `now_unix`.
    pub fn until_due(&self, now_unix: u64) -> Duration {
        let due_at = self
            .current()
            .not_after
            .saturating_sub(RENEW_BEFORE.as_secs());
        Duration::from_secs(due_at.saturating_sub(now_unix))
    }
}

/// How often [`run_renewal`] looks at the wall clock at most, so that a
/// stepped clock is noticed.
pub const RENEWAL_CHECK: Duration = Duration::from_secs(3600);

/// Keeps `store` renewed until `shutdown`: wakes when the certificate is
/// due, at least every `check_every` (use [`RENEWAL_CHECK`]), and whenever
/// `recheck` is notified (a reload: the wall clock may have been stepped),
/// then renews if the certificate is due by `clock`.
pub async fn run_renewal(
    store: Arc<BrowserCertStore>,
    clock: Arc<dyn Clock>,
    check_every: Duration,
    recheck: Arc<tokio::sync::Notify>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let wait = store.until_due(clock.now_unix_secs()).min(check_every);
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(wait) => {}
            _ = recheck.notified() => {}
        }
        match store.renew_if_due(clock.now_unix_secs()) {
            Ok(true) => tracing::info!(
                sha256 = %store.current().sha256_hex,
                "renewed the WebTransport development certificate"
            ),
            Ok(false) => {}
            Err(err) => tracing::error!(%err, "WebTransport certificate renewal failed"),
        }
    }
}

/// Presents the browser certificate to connections that offer `h3` and
/// `other` (the node's certificate) to everything else.
pub struct AlpnCertResolver {
    browser: Arc<BrowserCertStore>,
    other: Arc<dyn ResolvesServerCert>,
}

impl AlpnCertResolver {
    /// A resolver over the two certificates.
    pub fn new(browser: Arc<BrowserCertStore>, other: Arc<dyn ResolvesServerCert>) -> Self {
        Self { browser, other }
    }
}

impl fmt::Debug for AlpnCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlpnCertResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for AlpnCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offers_h3 = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ALPN_H3));
        if offers_h3 {
            Some(Arc::clone(&self.browser.current().certified))
        } else {
            self.other.resolve(hello)
        }
    }
}

/// `GET /certificate.sha256`: the current certificate's hex SHA-256 and a
/// newline, readable from any origin. Merge it into the admin router.
pub fn certificate_router(store: Arc<BrowserCertStore>) -> Router {
    Router::new()
        .route(
            "/certificate.sha256",
            get(get_certificate_hash).options(preflight),
        )
        .with_state(store)
}

async fn get_certificate_hash(State(store): State<Arc<BrowserCertStore>>) -> Response {
    let body = format!("{}\n", store.current().sha256_hex);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn the_certificate_is_p256_self_signed_and_valid_at_most_14_days() {
        let cert = BrowserCert::issue(&["127.10.0.1".into()], NOW).expect("issue");
        assert_eq!(cert.not_before, NOW - 3600);
        assert!(cert.not_after - cert.not_before <= MAX_VALIDITY.as_secs());
        // The DER itself states the same: parse it back with webpki.
        let der = cert.der();
        let parsed = webpki::EndEntityCert::try_from(der).expect("parses as X.509");
        assert!(
            parsed
                .verify_is_valid_for_subject_name(
                    &rustls::pki_types::ServerName::try_from("127.10.0.1").expect("ip")
                )
                .is_ok()
        );
        // SubjectPublicKeyInfo names id-ecPublicKey with prime256v1.
        let p256_oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(der.windows(p256_oid.len()).any(|w| w == p256_oid));
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(cert.sha256_hex, hex);
        assert_eq!(cert.sha256_hex.len(), 64);
    }

    #[test]
    fn renewal_happens_only_when_due_and_changes_the_hash() {
        let store = BrowserCertStore::new(vec!["localhost".into()], NOW).expect("issue");
        let first = store.current();
        let due_at = first.not_after - RENEW_BEFORE.as_secs();
        assert_eq!(store.until_due(NOW), Duration::from_secs(due_at - NOW));
        assert!(!store.renew_if_due(due_at - 1).expect("renew"));
        assert_eq!(store.current().sha256_hex, first.sha256_hex);
        assert!(store.renew_if_due(due_at).expect("renew"));
        let second = store.current();
        assert_ne!(second.sha256_hex, first.sha256_hex);
        assert_eq!(second.not_before, due_at - 3600);
        assert!(second.not_after > first.not_after);
        assert_eq!(
            store.until_due(due_at),
            Duration::from_secs(VALIDITY.as_secs() - 3600 - RENEW_BEFORE.as_secs())
        );
    }

    #[tokio::test]
    async fn the_renewal_task_renews_when_the_clock_reaches_the_due_time() {
        let clock = Arc::new(crate::clock::ManualClock::new(NOW * 1000));
        let store = Arc::new(BrowserCertStore::new(vec!["localhost".into()], NOW).expect("issue"));
        let first = store.current().sha256_hex.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let check_every = Duration::from_millis(5);
        let task = tokio::spawn(run_renewal(
            Arc::clone(&store),
            clock.clone(),
            check_every,
            Arc::default(),
            async {
                let _ = stopped.await;
            },
        ));
        // Step the wall clock to the due time; the next check renews.
        clock.set((store.current().not_after - RENEW_BEFORE.as_secs()) * 1000);
        let renewed = tokio::time::timeout(Duration::from_secs(10), async {
            while store.current().sha256_hex == first {
                tokio::time::sleep(check_every).await;
            }
        })
        .await;
        assert!(renewed.is_ok(), "not renewed");
        let _ = stop.send(());
        task.await.expect("task ends on shutdown");
    }

    #[tokio::test]
    async fn a_recheck_renews_at_once_when_the_stepped_clock_is_due() {
        let clock = Arc::new(crate::clock::ManualClock::new(NOW * 1000));
        let store = Arc::new(BrowserCertStore::new(vec!["localhost".into()], NOW).expect("issue"));
        let first = store.current().sha256_hex.clone();
        let recheck = Arc::new(tokio::sync::Notify::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The periodic check alone would wait for an hour.
        let task = tokio::spawn(run_renewal(
            Arc::clone(&store),
            clock.clone(),
            RENEWAL_CHECK,
            Arc::clone(&recheck),
            async {
                let _ = stopped.await;
            },
        ));
        clock.set((store.current().not_after - RENEW_BEFORE.as_secs()) * 1000);
        let renewed = tokio::time::timeout(Duration::from_secs(10), async {
            while store.current().sha256_hex == first {
                recheck.notify_one();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(renewed.is_ok(), "not renewed on recheck");
        let _ = stop.send(());
        task.await.expect("task ends on shutdown");
    }

    #[tokio::test]
    async fn the_hash_is_served_with_cors() {
        let store = Arc::new(BrowserCertStore::new(vec!["localhost".into()], NOW).expect("issue"));
        let router = certificate_router(Arc::clone(&store));
        let request = axum::http::Request::get("/certificate.sha256")
            .header("Origin", "http://127.0.0.1:8080")
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(&HeaderValue::from_static("*"))
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(body, format!("{}\n", store.current().sha256_hex).as_bytes());

        let preflight = axum::http::Request::options("/certificate.sha256")
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router.oneshot(preflight).await.expect("response");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(
            response
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
        );
    }
}

//! An HTTP client wrapper that counts concurrent requests, so a test can
//! check an emitter's "at most N requests in flight" bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// Wraps an SDK HTTP client (for example `aws_smithy_mocks::create_mock_http_client()`)
/// and holds every request for a fixed delay, counting how many are held at
/// once.
///
/// Mocked clients answer synchronously, so without the delay requests never
/// overlap and a concurrency bound cannot be observed. Under
/// `tokio::time::pause` the delay costs no wall-clock time.
///
/// ```
/// use std::time::Duration;
/// use kinesis_connectors_testkit::InFlightProbe;
///
/// let probe = InFlightProbe::new(Duration::from_millis(50));
/// // config_builder.http_client(probe.wrap(inner_http_client))
/// assert_eq!(probe.peak(), 0);
/// assert_eq!(probe.requests(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct InFlightProbe {
    delay: Duration,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    current: AtomicUsize,
    peak: AtomicUsize,
    requests: AtomicUsize,
}

impl InFlightProbe {
    /// A probe that holds each request for `delay` before passing it on.
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            counts: Arc::default(),
        }
    }

    /// An HTTP client sending through `inner`, counted by this probe. Give it
    /// to the SDK config builder's `http_client`.
    pub fn wrap(&self, inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(ProbedClient {
            inner,
            probe: self.clone(),
        })
    }

    /// The largest number of requests that were in flight at the same time.
    pub fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }

    /// How many requests went through the probe.
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct ProbedClient {
    inner: SharedHttpClient,
    probe: InFlightProbe,
}

impl HttpClient for ProbedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(ProbedConnector {
            inner: self.inner.http_connector(settings, components),
            probe: self.probe.clone(),
        })
    }
}

#[derive(Debug)]
struct ProbedConnector {
    inner: SharedHttpConnector,
    probe: InFlightProbe,
}

/// Decrements the in-flight count even when the request future is dropped.
struct InFlight(Arc<Counts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HttpConnector for ProbedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let InFlightProbe { delay, counts } = self.probe.clone();
        HttpConnectorFuture::new(async move {
            counts.requests.fetch_add(1, Ordering::SeqCst);
            let now = counts.current.fetch_add(1, Ordering::SeqCst) + 1;
            counts.peak.fetch_max(now, Ordering::SeqCst);
            let _in_flight = InFlight(Arc::clone(&counts));
            tokio::time::sleep(delay).await;
            inner.call(request).await
        })
    }
}

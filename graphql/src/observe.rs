//! Per-request observability: Prometheus counters and latency histograms by route pattern and
//! status, and a structured log line per request (debug level; warnings for 5xx).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpRequest;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// HTTP metrics, registered once per process and shared by every worker.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl HttpMetrics {
    /// Registers `provledger_http_requests_total` and `provledger_http_request_seconds`.
    pub fn register(registry: &Registry) -> Result<HttpMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "provledger_http_requests_total",
                "HTTP requests answered, by method, route pattern and status.",
            ),
            &["method", "route", "status"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "provledger_http_request_seconds",
                "Time to answer an HTTP request, by route pattern.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(HttpMetrics { requests, seconds })
    }
}

/// actix middleware (`middleware::from_fn(observe)`): times the request and records it.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<actix_web::web::Data<crate::AppState>>()
        .map(|s| s.http.clone());
    let method = req.method().to_string();
    let res = next.call(req).await?;
    let elapsed = started.elapsed();
    let route = route_of(res.request());
    let status = res.status().as_u16();
    if let Some(m) = metrics {
        m.requests
            .with_label_values(&[method.as_str(), &*route, &status.to_string()])
            .inc();
        m.seconds
            .with_label_values(&[&*route])
            .observe(elapsed.as_secs_f64());
    }
    let ms = elapsed.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, %route, status, ms, "request failed");
    } else {
        tracing::debug!(%method, %route, status, ms, "request");
    }
    Ok(res)
}

thread_local! {
    /// Paths seen to match a route whose pattern is the path itself (`/v1/records`,
    /// `/checkpoint`): at most one entry per static route, per worker thread.
    static STATIC_ROUTES: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// The route pattern a request matched (`/v1/records/{id}`), never the raw path, so that label
/// values stay bounded; `unmatched` for none. `match_pattern` matches the path against the
/// routes again (regex-lite for those with parameters), so a static route, once seen, is
/// answered from [`STATIC_ROUTES`] instead.
fn route_of(req: &HttpRequest) -> Cow<'_, str> {
    let path = req.path();
    if STATIC_ROUTES.with_borrow(|s| s.contains(path)) {
        return Cow::Borrowed(path);
    }
    match req.match_pattern() {
        Some(pattern) if pattern == path => {
            STATIC_ROUTES.with_borrow_mut(|s| s.insert(pattern));
            Cow::Borrowed(path)
        }
        Some(pattern) => Cow::Owned(pattern),
        None => Cow::Borrowed("unmatched"),
    }
}

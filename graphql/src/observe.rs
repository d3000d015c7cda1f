//! Per-request observability: Prometheus counters and latency histograms by route pattern and
//! status, and a structured log line per request (debug level; warnings for 5xx).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpMessage as _;
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
    // Standard methods clone without allocating.
    let method = req.method().clone();
    let res = next.call(req).await?;
    let elapsed = started.elapsed();
    // The pattern of the route's access rule (`/v1/records/{id}`), never the raw path, so that
    // label values stay bounded. `authorize` found it; `unmatched` when no rule covers the path.
    let route = res
        .request()
        .extensions()
        .get::<crate::auth::RoutePattern>()
        .map_or("unmatched", |p| p.0);
    let status = res.status().as_u16();
    if let Some(m) = metrics {
        m.requests
            .with_label_values(&[method.as_str(), route, &status.to_string()])
            .inc();
        m.seconds
            .with_label_values(&[route])
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

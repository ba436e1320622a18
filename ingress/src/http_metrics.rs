use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use ticketing_runtime::Metrics;

/// Counts and times every request by its route template (`/api/v1/concerts/{concert_id}`),
/// never the raw path, so label values stay bounded.
pub async fn record(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics
        .http_requests
        .with_label_values(&[&route, &method, &status])
        .inc();
    metrics
        .http_latency
        .with_label_values(&[&route, &method, &status])
        .observe(started.elapsed().as_secs_f64());
    response
}

//! The HTTP front of the platform.
//!
//! It authenticates, validates, turns each command into an event (published to
//! the log keyed by its owning aggregate) and serves reads from the stores.
//! Decisions about seats and queues are not made here but in the processors.

pub mod auth;
pub mod bootstrap;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod http_metrics;
mod ids;
pub mod live;
pub mod openapi;
pub mod payments;
pub mod publish;
pub mod replies;
pub mod request_log;
pub mod routes;
pub mod security;
pub mod state;

pub use state::AppState;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use routes::{accounts, admin, catalog, payments as pay, schedules};
use ticketing_runtime::ops_router;

/// Bodies are small JSON documents; refusing large ones early keeps a flood of
/// junk from costing memory.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole HTTP surface: API, OpenAPI document and ops endpoints.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/users", post(accounts::sign_up))
        .route("/api/v1/users/me", get(accounts::me))
        .route("/api/v1/auth/login", post(accounts::login))
        .route("/api/v1/auth/refresh", post(accounts::refresh))
        .route("/api/v1/auth/logout", post(accounts::logout))
        .route("/api/v1/stages", post(catalog::create_stage))
        .route(
            "/api/v1/concerts",
            post(catalog::create_concert).get(catalog::list_concerts),
        )
        .route("/api/v1/concerts/{concert_id}", get(catalog::get_concert))
        .route(
            "/api/v1/concerts/{concert_id}/schedules",
            post(catalog::create_schedule),
        )
        .route(
            "/api/v1/schedules/{schedule_id}/seats",
            get(catalog::seat_map),
        )
        .route(
            "/api/v1/schedules/{schedule_id}/queue",
            post(schedules::join_queue),
        )
        .route(
            "/api/v1/schedules/{schedule_id}/queue/me",
            get(schedules::my_queue_status).delete(schedules::leave_queue),
        )
        .route(
            "/api/v1/schedules/{schedule_id}/queue/me/events",
            get(schedules::my_queue_events),
        )
        .route(
            "/api/v1/schedules/{schedule_id}/holds",
            post(schedules::hold_seats),
        )
        .route("/api/v1/bookings", get(schedules::my_bookings))
        .route(
            "/api/v1/bookings/{booking_id}",
            delete(schedules::release_booking),
        )
        .route("/api/v1/payments", post(pay::pay))
        .route("/api/v1/payments/{payment_id}", get(pay::get_payment))
        .route(
            "/api/v1/payments/{payment_id}/cancel",
            post(pay::cancel_payment),
        )
        .route("/api/v1/admin/payments", get(admin::list_payments))
        .route("/api/v1/admin/refunds", get(admin::list_refunds))
        .route("/api/v1/admin/stream", get(admin::stream))
        .route("/api/v1/admin/request-logs", get(admin::list_request_logs))
        .route(
            "/api/v1/admin/request-logs/stream",
            get(admin::stream_request_logs),
        )
        .route("/api-docs/openapi.json", get(openapi::serve))
        .fallback(|| async { error::ApiError::not_found("NOT_FOUND", "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            http_metrics::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.request_log.clone(),
            request_log::record,
        ))
        .with_state(state.clone());
    api.merge(ops_router(state.metrics.clone(), state.readiness.clone()))
}

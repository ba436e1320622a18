//! `ticketing pg-sandbox`: the sandbox payment provider over HTTP, so the
//! real stack pays against a PG that behaves like one (test cards, one charge
//! per order, lookups, cancellations) without leaving the machine.

use crate::serve;
use crate::settings::PgSandboxSettings;
use std::time::Duration;
use ticketing_payments::http::sandbox_router;
use ticketing_payments::sandbox::SandboxProvider;
use ticketing_runtime::shutdown::Shutdown;

pub async fn run(
    settings: PgSandboxSettings,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.secret_key.len() >= 8,
        "TICKETING_PG_SECRET_KEY must have at least 8 characters"
    );
    let router = sandbox_router(
        SandboxProvider::new(),
        &settings.secret_key,
        Duration::from_millis(settings.timeout_delay_ms),
    );
    serve(listener, router, shutdown).await
}

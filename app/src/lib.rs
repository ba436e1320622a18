//! Wiring: which adapters sit behind the ports, per way of running.
//!
//! - [`dev`]: everything in one process over the embedded log and store.
//! - [`stack`]: one role per process over Kafka, CQL, Redis and the registry.
//!
//! Both build the same ingress router and the same sinks; only adapters differ.

pub mod dev;
pub mod secrets;
pub mod settings;
pub mod stack;

use anyhow::Context;
use chrono::Duration;
use settings::HttpSettings;
use ticketing_ingress::security::password::PasswordHasher;
use ticketing_ingress::security::phone::PhoneCipher;
use ticketing_ingress::security::tokens::TokenService;
use ticketing_runtime::shutdown::Shutdown;

/// The token and phone-encryption services from settings.
pub(crate) fn security(
    http: &HttpSettings,
    token_secret: &str,
    phone_keys: &str,
) -> anyhow::Result<(TokenService, PhoneCipher, PasswordHasher)> {
    let tokens = TokenService::new(
        token_secret.as_bytes(),
        Duration::seconds(http.access_ttl_secs),
        Duration::seconds(http.refresh_ttl_secs),
    )
    .context("TICKETING_TOKEN_SECRET")?;
    let phones = PhoneCipher::from_spec(phone_keys).context("TICKETING_PHONE_KEYS")?;
    Ok((tokens, phones, PasswordHasher::new()))
}

/// Serves `router` until shutdown, finishing requests in flight.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.wait())
        .await
        .context("HTTP server")
}

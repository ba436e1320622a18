//! Wiring: which adapters sit behind the ports, per way of running.
//!
//! - [`dev`]: everything in one process over the embedded log and store.
//! - [`stack`]: one role per process over Kafka, CQL, Redis and the registry.
//!
//! Both build the same ingress router and the same sinks; only adapters differ.

pub mod dev;
pub mod pg_sandbox;
mod probes;
pub mod secrets;
pub mod settings;
pub mod stack;

use anyhow::Context;
use chrono::Duration;
use settings::HttpSettings;
use std::sync::Arc;
use ticketing_domain::schedule::Reply;
use ticketing_ingress::gateway::{LogGateway, ScheduleGateway};
use ticketing_ingress::live::{run_feed, LiveEvent, LiveFeed};
use ticketing_ingress::payments::PaymentService;
use ticketing_ingress::publish::EventPublisher;
use ticketing_ingress::replies::PendingReplies;
use ticketing_ingress::request_log::RequestLogger;
use ticketing_ingress::security::card::CardCipher;
use ticketing_ingress::security::password::PasswordHasher;
use ticketing_ingress::security::phone::PhoneCipher;
use ticketing_ingress::security::tokens::TokenService;
use ticketing_ingress::{bootstrap, AppState};
use ticketing_payments::PaymentProvider;
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::{Health, Metrics};
use ticketing_schemas::EventCodec;
use ticketing_storage::{
    AccountStore, CatalogStore, PaymentStore, PaymentViews, RequestLogs, ScheduleReadModel,
    SessionStore,
};
use ticketing_transport::Producer;

/// The engines behind the ingress's ports, as chosen by one way of running.
pub(crate) struct Backends {
    pub accounts: Arc<dyn AccountStore>,
    pub catalog: Arc<dyn CatalogStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub schedule_reads: Arc<dyn ScheduleReadModel>,
    pub payments: Arc<dyn PaymentStore>,
    pub payment_views: Arc<dyn PaymentViews>,
    pub request_logs: Arc<dyn RequestLogs>,
    pub provider: Arc<dyn PaymentProvider>,
    pub producer: Arc<dyn Producer>,
    pub codec: EventCodec,
    /// Where the processors' answers for this instance are handed over, and
    /// the address they are sent to (see [`ticketing_ingress::gateway`]).
    pub replies: Arc<PendingReplies<Reply>>,
    pub reply_to: String,
}

/// Secrets the ingress needs; `dev` generates them, the real stack is given
/// them.
pub(crate) struct IngressSecrets<'a> {
    pub token_secret: &'a str,
    pub phone_keys: &'a str,
    pub card_keys: &'a str,
}

/// The ingress's state from settings and backends, with the bootstrap MANAGER
/// created if configured: the same for `dev` and the real stack.
pub(crate) async fn ingress_state(
    http: &HttpSettings,
    secrets: IngressSecrets<'_>,
    backends: Backends,
    metrics: Metrics,
    readiness: Health,
    shutdown: &Shutdown,
) -> anyhow::Result<(AppState, tokio::task::JoinHandle<()>)> {
    let tokens = TokenService::new(
        secrets.token_secret.as_bytes(),
        Duration::seconds(http.access_ttl_secs),
        Duration::seconds(http.refresh_ttl_secs),
    )
    .context("TICKETING_TOKEN_SECRET")?;
    let phones = PhoneCipher::from_spec(secrets.phone_keys).context("TICKETING_PHONE_KEYS")?;
    let cards = CardCipher::from_spec(secrets.card_keys).context("TICKETING_CARD_KEYS")?;
    let publisher = EventPublisher::new(backends.codec, backends.producer, metrics.clone());
    let gateway: Arc<dyn ScheduleGateway> = Arc::new(LogGateway::new(
        publisher.clone(),
        backends.replies,
        backends.reply_to,
        std::time::Duration::from_millis(http.decision_timeout_ms),
    ));
    let payments = Arc::new(PaymentService::new(
        backends.payments,
        backends.provider,
        gateway.clone(),
        cards,
        publisher.clone(),
    ));
    let (request_log, request_log_task) =
        RequestLogger::start(publisher.clone(), metrics.clone(), shutdown.clone());
    let state = AppState {
        accounts: backends.accounts,
        catalog: backends.catalog,
        sessions: backends.sessions,
        publisher,
        schedules: gateway,
        schedule_reads: backends.schedule_reads,
        payments,
        payment_views: backends.payment_views,
        live: LiveFeed::default(),
        request_log,
        request_logs: backends.request_logs,
        passwords: PasswordHasher::new(),
        phones,
        tokens,
        metrics,
        readiness,
    };
    if let (Some(email), Some(password)) = (&http.admin_email, &http.admin_password) {
        bootstrap::ensure_admin(&state, email, password).await?;
    }
    Ok((state, request_log_task))
}

/// The sweeper looks at least this often, and four times per
/// `payment_sweep_after_secs`, so a payment cut short waits at most a
/// quarter longer than that.
const SWEEP_EVERY_AT_MOST: std::time::Duration = std::time::Duration::from_secs(15);

/// Finishes payments and refunds cut short (a crash, a lost answer) until
/// shutdown. Every ingress runs one; they may overlap, since every step is
/// idempotent and every record change a compare-and-set.
pub(crate) fn spawn_payment_sweeper(
    payments: Arc<PaymentService>,
    after_secs: u64,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let after = chrono::Duration::seconds(i64::try_from(after_secs.max(1)).unwrap_or(i64::MAX));
    let every = SWEEP_EVERY_AT_MOST.min(std::time::Duration::from_millis(after_secs.max(1) * 250));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    let now = chrono::Utc::now();
                    let settled = payments.sweep(now - after, now).await;
                    if settled > 0 {
                        tracing::info!(settled, "payments finished by the sweeper");
                    }
                }
            }
        }
    })
}

/// Feeds the admin live streams from `consumer` (the payments and
/// request-log topics, read from their end by this instance alone).
pub(crate) fn spawn_live_feed(
    consumer: Box<dyn ticketing_transport::Consumer>,
    codec: EventCodec,
    feed: LiveFeed<LiveEvent>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_feed(
        consumer,
        codec,
        Arc::new(LiveEvent::pick),
        feed,
        shutdown,
    ))
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

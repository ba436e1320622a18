//! `ticketing dev`: ingress, schedule processor and sinks in one process, over
//! the embedded log, store and schema registry. The same code paths as the real
//! stack: commands go through the log to the processor, answers come back on
//! the replies topic, reads come from a read model fed by the changelog.

use crate::settings::DevSettings;
use crate::{
    ingress_state, secrets, serve, spawn_live_feed, spawn_payment_sweeper, Backends, IngressSecrets,
};
use anyhow::Context;
use std::sync::Arc;
use ticketing_ingress::gateway::listen_for_replies;
use ticketing_ingress::live::LiveEvent;
use ticketing_ingress::replies::PendingReplies;
use ticketing_ingress::router;
use ticketing_payments::sandbox::SandboxProvider;
use ticketing_processors::{ProcessorConfig, ScheduleProcessor};
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::{Health, Metrics};
use ticketing_schemas::{topics, EmbeddedSchemaRegistry, EventCodec};
use ticketing_sinks::bookings::BookingSink;
use ticketing_sinks::catalog::CatalogSink;
use ticketing_sinks::payments::PaymentSink;
use ticketing_sinks::request_logs::RequestLogSink;
use ticketing_sinks::runner;
use ticketing_sinks::schedule_view::{ScheduleViewSink, ScheduleViews};
use ticketing_storage::embedded::EmbeddedStore;
use ticketing_transport::embedded::EmbeddedLog;

pub async fn run(
    settings: DevSettings,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secrets = secrets::load_or_create(dir)?;
    let token_secret = settings
        .http
        .token_secret
        .clone()
        .unwrap_or(secrets.token_secret);
    let phone_keys = settings
        .http
        .phone_keys
        .clone()
        .unwrap_or(secrets.phone_keys);
    let card_keys = settings
        .http
        .card_keys
        .clone()
        .or(secrets.card_keys)
        .context("no card keys")?;

    let store =
        EmbeddedStore::open(&dir.join("store.redb")).context("opening the embedded store")?;
    let registry = EmbeddedSchemaRegistry::open(&dir.join("schemas.json"))
        .context("opening the embedded schema registry")?;
    let codec = EventCodec::start(Arc::new(registry))
        .await
        .context("registering schemas")?;
    let topic_specs: Vec<(&str, i32)> =
        topics::ALL.iter().map(|t| (t.name, t.partitions)).collect();
    let log =
        EmbeddedLog::open(&dir.join("log"), &topic_specs).context("opening the embedded log")?;

    let metrics = Metrics::new("dev");
    let readiness = Health::default();
    let core = settings.http.schedules.core()?;
    let reads = ScheduleViews::new(core);
    let replies = Arc::new(PendingReplies::default());
    // One dev process: one reply address, and a group that resumes where the
    // last run stopped instead of re-reading old answers.
    let reply_to = "dev".to_string();
    let (state, request_log_task) = ingress_state(
        &settings.http,
        IngressSecrets {
            token_secret: &token_secret,
            phone_keys: &phone_keys,
            card_keys: &card_keys,
        },
        Backends {
            accounts: Arc::new(store.clone()),
            catalog: Arc::new(store.clone()),
            sessions: Arc::new(store.clone()),
            schedule_reads: Arc::new(reads.clone()),
            payments: Arc::new(store.clone()),
            payment_views: Arc::new(store.clone()),
            request_logs: Arc::new(store.clone()),
            // The sandbox PG in process: test cards behave as on the real
            // stack, with no server to run.
            provider: Arc::new(SandboxProvider::new()),
            producer: Arc::new(log.producer()),
            codec: codec.clone(),
            replies: replies.clone(),
            reply_to: reply_to.clone(),
        },
        metrics.clone(),
        readiness.clone(),
        &shutdown,
    )
    .await?;

    let consumer = log
        .consumer("catalog-sink", &[topics::CATALOG, topics::SCHEDULES])
        .context("subscribing the catalog sink")?;
    let sink = tokio::spawn(runner::run(
        consumer,
        Arc::new(CatalogSink::new(codec.clone(), Arc::new(store.clone()))),
        metrics.clone(),
        shutdown.clone(),
    ));

    let payment_sink = tokio::spawn(runner::run(
        log.consumer("payment-sink", &[topics::PAYMENTS])
            .context("subscribing the payment sink")?,
        Arc::new(PaymentSink::new(codec.clone(), Arc::new(store.clone()))),
        metrics.clone(),
        shutdown.clone(),
    ));
    let request_log_sink = tokio::spawn(runner::run(
        log.consumer("request-log-sink", &[topics::REQUEST_LOGS])
            .context("subscribing the request-log sink")?,
        Arc::new(RequestLogSink::new(
            codec.clone(),
            Arc::new(store.clone()),
            settings.request_log_retention_days,
        )),
        metrics.clone(),
        shutdown.clone(),
    ));
    let booking_sink = tokio::spawn(runner::run(
        log.consumer("booking-sink", &[topics::SCHEDULE_EVENTS])
            .context("subscribing the booking sink")?,
        Arc::new(BookingSink::new(codec.clone(), Arc::new(store.clone()))),
        metrics.clone(),
        shutdown.clone(),
    ));

    // The read model lives in memory, so it is rebuilt from the whole changelog
    // at every start: a group of its own, new each run, reads from the start.
    let view_group = format!("schedule-view-{}", uuid::Uuid::now_v7());
    let views = log
        .consumer(&view_group, &[topics::SCHEDULE_EVENTS])
        .context("subscribing the schedule read model")?;
    let view_sink = tokio::spawn(runner::run(
        views,
        Arc::new(ScheduleViewSink::new(codec.clone(), reads.clone())),
        metrics.clone(),
        shutdown.clone(),
    ));

    let stream = log
        .transactional_stream("schedule-processor", &[topics::SCHEDULES])
        .context("subscribing the schedule processor")?;
    let processor = tokio::spawn(
        ScheduleProcessor::new(
            stream,
            codec.clone(),
            ProcessorConfig::new("dev", core),
            metrics.clone(),
        )
        .run(shutdown.clone()),
    );
    let live_codec = codec.clone();
    let answers = log
        .consumer("replies-dev", &[topics::SCHEDULE_REPLIES])
        .context("subscribing to the replies")?;
    let listener_task = tokio::spawn(listen_for_replies(
        Box::new(answers),
        codec,
        replies,
        reply_to,
        shutdown.clone(),
    ));

    let sweeper = spawn_payment_sweeper(
        state.payments.clone(),
        settings.http.payment_sweep_after_secs,
        shutdown.clone(),
    );
    let feed = spawn_live_feed(
        Box::new(
            log.tail(&LiveEvent::TOPICS)
                .context("subscribing the admin live stream")?,
        ),
        live_codec,
        state.live.clone(),
        shutdown.clone(),
    );

    readiness.set_ready(true);
    tracing::info!(data_dir = %dir.display(), "ticketing dev is up");
    let served = serve(listener, router(state), shutdown).await;
    readiness.set_ready(false);
    sweeper.await.context("payment sweeper task")?;
    request_log_task.await.context("request log task")?;
    feed.await.context("admin live feed task")?;
    sink.await.context("catalog sink task")??;
    payment_sink.await.context("payment sink task")??;
    booking_sink.await.context("booking sink task")??;
    request_log_sink.await.context("request-log sink task")??;
    view_sink.await.context("schedule read model task")??;
    processor.await.context("schedule processor task")??;
    listener_task.await.context("replies listener task")?;
    served
}

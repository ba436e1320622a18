use crate::gateway::ScheduleGateway;
use crate::live::{LiveEvent, LiveFeed};
use crate::payments::PaymentService;
use crate::publish::EventPublisher;
use crate::request_log::RequestLogger;
use crate::security::password::PasswordHasher;
use crate::security::phone::PhoneCipher;
use crate::security::tokens::TokenService;
use std::sync::Arc;
use ticketing_runtime::{Health, Metrics};
use ticketing_storage::{
    AccountStore, CatalogStore, PaymentViews, RequestLogs, ScheduleReadModel, SessionStore,
};

/// Everything a handler may use. The engines behind the stores and the producer
/// are chosen at start-up (embedded or real stack); handlers never know which.
#[derive(Clone)]
pub struct AppState {
    pub accounts: Arc<dyn AccountStore>,
    pub catalog: Arc<dyn CatalogStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub publisher: EventPublisher,
    /// Where queue and seat commands are decided.
    pub schedules: Arc<dyn ScheduleGateway>,
    /// Seat maps, queue statuses and bookings, as the processors decided them.
    pub schedule_reads: Arc<dyn ScheduleReadModel>,
    /// Charges, refunds and the payment records.
    pub payments: Arc<PaymentService>,
    /// Payments and refunds as the payment sink recorded them (admin pages).
    pub payment_views: Arc<dyn PaymentViews>,
    /// Payment changes and answered requests as they are published (the
    /// admin live streams).
    pub live: LiveFeed<LiveEvent>,
    /// Where every answered request is logged.
    pub request_log: RequestLogger,
    /// The request log as the request-log sink wrote it (admin pages).
    pub request_logs: Arc<dyn RequestLogs>,
    pub passwords: PasswordHasher,
    pub phones: PhoneCipher,
    pub tokens: TokenService,
    pub metrics: Metrics,
    pub readiness: Health,
}

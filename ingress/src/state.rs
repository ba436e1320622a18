use crate::publish::EventPublisher;
use crate::security::password::PasswordHasher;
use crate::security::phone::PhoneCipher;
use crate::security::tokens::TokenService;
use std::sync::Arc;
use ticketing_runtime::{Metrics, Readiness};
use ticketing_storage::{AccountStore, CatalogStore, SessionStore};

/// Everything a handler may use. The engines behind the stores and the producer
/// are chosen at start-up (embedded or real stack); handlers never know which.
#[derive(Clone)]
pub struct AppState {
    pub accounts: Arc<dyn AccountStore>,
    pub catalog: Arc<dyn CatalogStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub publisher: EventPublisher,
    pub passwords: PasswordHasher,
    pub phones: PhoneCipher,
    pub tokens: TokenService,
    pub metrics: Metrics,
    pub readiness: Readiness,
}

//! The port every payment provider adapter implements, in the vocabulary of a
//! Korean PG: a payment is charged for an order id (ours: the payment id), is
//! known to the PG by its payment key, can be cancelled in full or in part, and
//! can be looked up by order id when the outcome of a charge is unknown.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use ticketing_domain::payment::Card;

/// One charge, keyed by `order_id`: the provider charges an order id at most
/// once, so a retried charge after a crash or a timeout can never take the
/// money twice.
#[derive(Clone, Debug)]
pub struct ChargeRequest {
    pub order_id: String,
    /// What the buyer sees on their statement.
    pub order_name: String,
    pub amount: i64,
    pub card: Card,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProviderStatus {
    /// Charged.
    Done,
    Canceled,
    PartialCanceled,
    /// Declined or failed: nothing charged.
    Aborted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderCancel {
    pub cancel_amount: i64,
    pub cancel_reason: String,
    pub canceled_at: DateTime<Utc>,
}

/// A payment as the provider knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderPayment {
    pub payment_key: String,
    pub order_id: String,
    pub status: ProviderStatus,
    pub total_amount: i64,
    /// What is left after cancellations.
    pub balance_amount: i64,
    /// Masked as the PG masks it: only the last four digits are real.
    pub card_number: String,
    pub approved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub cancels: Vec<ProviderCancel>,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProviderError {
    /// The card issuer refused (nothing charged).
    #[error("declined by the card company ({code})")]
    Declined { code: String, message: String },
    /// Not enough balance or credit (nothing charged).
    #[error("insufficient funds ({code})")]
    InsufficientFunds { code: String, message: String },
    /// The request may or may not have been carried out: the outcome must be
    /// learned by looking the order up, never by charging again.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The provider refused the request itself (an order charged already, a
    /// cancellation larger than the balance, an unknown payment key).
    #[error("refused by the provider: {code}: {message}")]
    Refused { code: String, message: String },
    /// The provider could not be reached; nothing happened.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges the card. `Err(Unknown)` when the charge may have happened.
    async fn charge(&self, request: &ChargeRequest) -> Result<ProviderPayment, ProviderError>;

    /// Cancels `amount` of a charged payment (all of what is left, or part).
    /// `idempotency_key` makes a retried cancellation a no-op.
    async fn cancel(
        &self,
        payment_key: &str,
        amount: i64,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError>;

    /// The payment charged for an order, if any.
    async fn lookup(&self, order_id: &str) -> Result<Option<ProviderPayment>, ProviderError>;
}

/// How the PG shows a card number: the first eight digits and the last four
/// are kept by real PGs; we keep only the last four.
pub fn masked(last4: &str) -> String {
    format!("************{last4}")
}

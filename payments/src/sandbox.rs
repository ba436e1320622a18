//! The sandbox provider: a PG the project runs itself, with test cards that
//! trigger each outcome a real one has.
//!
//! | card | outcome |
//! |---|---|
//! | `4242424242424242` | charged |
//! | `4000000000000002` | declined by the card company |
//! | `4000000000009995` | insufficient funds |
//! | `4000000000000119` | charged, but the answer is lost (a timeout): a lookup finds it |
//!
//! Any other valid card number is charged. Like a real PG it charges an order
//! id once: a second charge of the same order answers
//! `ALREADY_PROCESSED_PAYMENT`, so a caller that retries blindly never takes
//! the money twice.

use crate::provider::*;
use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

pub const CARD_OK: &str = "4242424242424242";
pub const CARD_DECLINED: &str = "4000000000000002";
pub const CARD_INSUFFICIENT_FUNDS: &str = "4000000000009995";
pub const CARD_TIMEOUT: &str = "4000000000000119";

#[derive(Default)]
struct Books {
    by_order: HashMap<String, ProviderPayment>,
    order_of_key: HashMap<String, String>,
    /// Cancellation idempotency keys already carried out, with their answer.
    cancels_done: HashMap<String, ProviderPayment>,
    charges: u64,
}

/// In-process sandbox; cheap to clone (shared books).
#[derive(Clone, Default)]
pub struct SandboxProvider {
    books: Arc<Mutex<Books>>,
}

impl SandboxProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times money was actually taken (tests count double charges
    /// with it).
    pub fn charges(&self) -> u64 {
        self.books.lock().charges
    }
}

fn refused(code: &str, message: &str) -> ProviderError {
    ProviderError::Refused {
        code: code.into(),
        message: message.into(),
    }
}

#[async_trait]
impl PaymentProvider for SandboxProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ProviderPayment, ProviderError> {
        if request.amount <= 0 {
            return Err(refused("INVALID_REQUEST", "the amount must be positive"));
        }
        let number = request.card.number.expose();
        let mut books = self.books.lock();
        if books.by_order.contains_key(&request.order_id) {
            return Err(refused(
                "ALREADY_PROCESSED_PAYMENT",
                "this order has been paid already",
            ));
        }
        match number {
            CARD_DECLINED => {
                return Err(ProviderError::Declined {
                    code: "REJECT_CARD_COMPANY".into(),
                    message: "the card company refused the payment".into(),
                })
            }
            CARD_INSUFFICIENT_FUNDS => {
                return Err(ProviderError::InsufficientFunds {
                    code: "NOT_ENOUGH_BALANCE".into(),
                    message: "not enough balance or credit".into(),
                })
            }
            _ => {}
        }
        let payment = ProviderPayment {
            payment_key: format!("sbx_{}", uuid::Uuid::new_v4().simple()),
            order_id: request.order_id.clone(),
            status: ProviderStatus::Done,
            total_amount: request.amount,
            balance_amount: request.amount,
            card_number: masked(request.card.number.last4()),
            approved_at: Some(Utc::now()),
            cancels: Vec::new(),
        };
        books.charges += 1;
        books
            .order_of_key
            .insert(payment.payment_key.clone(), payment.order_id.clone());
        books
            .by_order
            .insert(payment.order_id.clone(), payment.clone());
        if number == CARD_TIMEOUT {
            return Err(ProviderError::Unknown(
                "the provider did not answer in time".into(),
            ));
        }
        Ok(payment)
    }

    async fn cancel(
        &self,
        payment_key: &str,
        amount: i64,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let mut books = self.books.lock();
        if let Some(done) = books.cancels_done.get(idempotency_key) {
            return Ok(done.clone());
        }
        let order = books
            .order_of_key
            .get(payment_key)
            .cloned()
            .ok_or_else(|| refused("NOT_FOUND_PAYMENT", "no payment with this key"))?;
        let payment = books
            .by_order
            .get_mut(&order)
            .expect("every payment key has its order");
        if payment.status == ProviderStatus::Canceled {
            return Err(refused(
                "ALREADY_CANCELED_PAYMENT",
                "the payment is cancelled already",
            ));
        }
        if amount <= 0 || amount > payment.balance_amount {
            return Err(refused(
                "NOT_CANCELABLE_AMOUNT",
                "the amount is not within what is left to cancel",
            ));
        }
        payment.balance_amount -= amount;
        payment.status = if payment.balance_amount == 0 {
            ProviderStatus::Canceled
        } else {
            ProviderStatus::PartialCanceled
        };
        payment.cancels.push(ProviderCancel {
            cancel_amount: amount,
            cancel_reason: reason.to_string(),
            canceled_at: Utc::now(),
        });
        let answer = payment.clone();
        books
            .cancels_done
            .insert(idempotency_key.to_string(), answer.clone());
        Ok(answer)
    }

    async fn lookup(&self, order_id: &str) -> Result<Option<ProviderPayment>, ProviderError> {
        Ok(self.books.lock().by_order.get(order_id).cloned())
    }
}

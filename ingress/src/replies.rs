//! Request/reply over the log: the HTTP handler registers the command id it is
//! about to send, and waits; the reply consumer completes it when the
//! processor's answer arrives. A handler that gives up (timeout, client gone)
//! removes its entry on drop, so the map never grows with abandoned requests.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use ticketing_domain::ids::CommandId;
use tokio::sync::oneshot;

pub struct PendingReplies<T> {
    waiting: Mutex<HashMap<CommandId, oneshot::Sender<T>>>,
}

impl<T> Default for PendingReplies<T> {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

/// One registered request. Dropping it forgets the request.
pub struct Waiter<T> {
    id: CommandId,
    rx: Option<oneshot::Receiver<T>>,
    owner: Arc<PendingReplies<T>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    /// No answer in time; the command may still be decided later, so the
    /// client retries with the same command id.
    TimedOut,
}

impl<T> PendingReplies<T> {
    /// Registers `id` before the command is sent, so an answer that comes back
    /// faster than the send returns is not lost. A second registration of the
    /// same id (a client retrying while its first request still waits)
    /// replaces the first: the newest waiter gets the answer.
    pub fn register(self: &Arc<Self>, id: CommandId) -> Waiter<T> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id, tx);
        Waiter {
            id,
            rx: Some(rx),
            owner: self.clone(),
        }
    }

    /// Hands an answer to its waiter; `false` if nobody waits (timed out, or an
    /// answer meant for another ingress instance).
    pub fn complete(&self, id: CommandId, value: T) -> bool {
        match self.waiting.lock().remove(&id) {
            Some(tx) => tx.send(value).is_ok(),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Waiter<T> {
    pub async fn wait(mut self, timeout: Duration) -> Result<T, WaitError> {
        let rx = self.rx.take().expect("a waiter is awaited once");
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            // Replaced by a newer registration of the same id, or timed out.
            Ok(Err(_)) | Err(_) => Err(WaitError::TimedOut),
        }
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        // Closing our receiver first makes our own sender report closed; a
        // newer waiter's sender (same id) stays open and keeps its entry.
        drop(self.rx.take());
        let mut map = self.owner.waiting.lock();
        if map.get(&self.id).is_some_and(|tx| tx.is_closed()) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> CommandId {
        CommandId::from_uuid(Uuid::from_u128(n))
    }

    #[tokio::test]
    async fn an_answer_reaches_its_waiter() {
        let p = Arc::new(PendingReplies::<u32>::default());
        let w = p.register(id(1));
        assert!(p.complete(id(1), 7));
        assert_eq!(w.wait(Duration::from_secs(1)).await, Ok(7));
        assert!(p.is_empty());
        assert!(!p.complete(id(1), 8), "answered once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_forgets_the_request() {
        let p = Arc::new(PendingReplies::<u32>::default());
        let w = p.register(id(1));
        assert_eq!(
            w.wait(Duration::from_millis(10)).await,
            Err(WaitError::TimedOut)
        );
        assert!(p.is_empty(), "no leak after a timeout");
        assert!(!p.complete(id(1), 1));
    }

    #[tokio::test]
    async fn a_dropped_request_is_forgotten_and_a_retry_takes_over() {
        let p = Arc::new(PendingReplies::<u32>::default());
        drop(p.register(id(1)));
        assert!(p.is_empty());
        let first = p.register(id(2));
        let second = p.register(id(2));
        drop(first);
        assert_eq!(
            p.len(),
            1,
            "dropping the replaced waiter keeps the newer one"
        );
        assert!(p.complete(id(2), 5));
        assert_eq!(second.wait(Duration::from_secs(1)).await, Ok(5));
    }
}

//! The ingress's door to the schedule processors: send one command about one
//! schedule and wait for the processor's decision. Which transport carries it
//! (Kafka with a reply topic, or the embedded log of `ticketing dev`) is the
//! adapter's business.

use async_trait::async_trait;
use thiserror::Error;
use ticketing_domain::ids::{CommandId, ScheduleId};
use ticketing_domain::schedule::{Command, Reply};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GatewayError {
    /// No decision in time. The command may still be decided; the client
    /// retries with the same command id and gets that decision, not a second one.
    #[error("no decision yet for command {0}")]
    Pending(CommandId),
    /// The log did not take the command; nothing was decided.
    #[error("the command could not be sent: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait ScheduleGateway: Send + Sync + 'static {
    async fn decide(
        &self,
        schedule_id: ScheduleId,
        command_id: CommandId,
        command: Command,
    ) -> Result<Reply, GatewayError>;
}

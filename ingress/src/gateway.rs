//! The ingress's door to the schedule processors: send one command about one
//! schedule and wait for the processor's decision. Which transport carries it
//! (Kafka with a reply topic, or the embedded log of `ticketing dev`) is the
//! adapter's business.

use crate::publish::EventPublisher;
use crate::replies::PendingReplies;
use crate::routes::meta;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use ticketing_domain::events::{Event, ScheduleCommandIssued};
use ticketing_domain::ids::{CommandId, ScheduleId};
use ticketing_domain::schedule::{Command, Envelope, Reply};
use ticketing_runtime::shutdown::Shutdown;
use ticketing_schemas::EventCodec;
use ticketing_transport::{Consumer, TransportError};

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

/// The gateway over the log: the command goes to the schedules topic keyed by
/// its schedule, and the answer comes back on the replies topic addressed to
/// this ingress instance (`reply_to`), where [`listen_for_replies`] hands it to
/// the waiting request. The same code runs over Kafka and the embedded log.
pub struct LogGateway {
    publisher: EventPublisher,
    replies: Arc<PendingReplies<Reply>>,
    reply_to: String,
    timeout: Duration,
}

impl LogGateway {
    pub fn new(
        publisher: EventPublisher,
        replies: Arc<PendingReplies<Reply>>,
        reply_to: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            publisher,
            replies,
            reply_to: reply_to.into(),
            timeout,
        }
    }
}

#[async_trait]
impl ScheduleGateway for LogGateway {
    async fn decide(
        &self,
        schedule_id: ScheduleId,
        command_id: CommandId,
        command: Command,
    ) -> Result<Reply, GatewayError> {
        // Registered before sending: the answer may come back before `publish`
        // returns.
        let waiter = self.replies.register(command_id);
        let actor = match &command {
            Command::Join { user }
            | Command::Leave { user }
            | Command::Hold { user, .. }
            | Command::Release { user, .. }
            | Command::StartPayment { user, .. } => Some(*user),
            // The payment service's outcomes and the clock act for nobody.
            Command::Tick
            | Command::CompletePayment { .. }
            | Command::AbortPayment { .. }
            | Command::Refund { .. } => None,
        };
        let event_meta = meta(actor);
        let event = Event::ScheduleCommandIssued(ScheduleCommandIssued {
            envelope: Envelope {
                command_id,
                at: event_meta.occurred_at,
                seed: rand::random(),
                command,
            },
            meta: event_meta,
            schedule_id,
            reply_to: Some(self.reply_to.clone()),
        });
        self.publisher
            .publish(&event)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        waiter
            .wait(self.timeout)
            .await
            .map_err(|_| GatewayError::Pending(command_id))
    }
}

/// Reads the replies topic and completes the requests waiting in this
/// instance; answers addressed to other instances are skipped. Runs until
/// shutdown. Offsets are committed as it goes: an answer is only useful to a
/// request that is still waiting, so nothing is replayed after a restart.
pub async fn listen_for_replies(
    mut consumer: Box<dyn Consumer>,
    codec: EventCodec,
    replies: Arc<PendingReplies<Reply>>,
    reply_to: String,
    shutdown: Shutdown,
) {
    loop {
        let record = tokio::select! {
            _ = shutdown.clone().wait() => break,
            r = consumer.recv() => r,
        };
        let record = match record {
            Ok(r) => r,
            Err(TransportError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "replies topic unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if record.key.as_deref() == Some(reply_to.as_str()) {
            match codec.decode(&record.payload).await {
                Ok(Event::ScheduleCommandAnswered(a)) => {
                    replies.complete(a.command_id, a.reply);
                }
                Ok(other) => {
                    tracing::warn!(
                        event = other.name(),
                        "unexpected event on the replies topic"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "undecodable reply skipped"),
            }
        }
        if let Err(e) = consumer.commit(&record).await {
            tracing::debug!(error = %e, "reply offset commit failed");
        }
    }
    if let Err(e) = consumer.close().await {
        tracing::debug!(error = %e, "closing the replies consumer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketing_domain::events::{EventMeta, ScheduleCommandAnswered};
    use ticketing_domain::ids::{EventId, UserId};
    use ticketing_domain::schedule::QueueStatus;
    use ticketing_runtime::{shutdown, Metrics};
    use ticketing_schemas::{topics, EmbeddedSchemaRegistry};
    use ticketing_transport::embedded::EmbeddedLog;
    use ticketing_transport::{OutRecord, Producer};
    use uuid::Uuid;

    struct Rig {
        log: EmbeddedLog,
        codec: EventCodec,
        gateway: Arc<LogGateway>,
        trigger: shutdown::ShutdownTrigger,
    }

    async fn rig(timeout: Duration) -> Rig {
        let specs: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (t.name, t.partitions)).collect();
        let log = EmbeddedLog::in_memory(&specs);
        let codec = EventCodec::start(Arc::new(EmbeddedSchemaRegistry::in_memory()))
            .await
            .unwrap();
        let replies = Arc::new(PendingReplies::default());
        let publisher = EventPublisher::new(
            codec.clone(),
            Arc::new(log.producer()),
            Metrics::new("test"),
        );
        let gateway = Arc::new(LogGateway::new(publisher, replies.clone(), "me", timeout));
        let (trigger, stop) = shutdown::channel();
        let consumer = log
            .consumer("replies", &[topics::SCHEDULE_REPLIES])
            .unwrap();
        tokio::spawn(listen_for_replies(
            Box::new(consumer),
            codec.clone(),
            replies,
            "me".into(),
            stop,
        ));
        Rig {
            log,
            codec,
            gateway,
            trigger,
        }
    }

    /// Plays the processor: reads one command and answers it to `reply_to`.
    async fn answer_next(rig: &Rig, reply_to: &str, reply: Reply) -> ScheduleCommandIssued {
        let mut commands = rig
            .log
            .consumer(&format!("p-{}", Uuid::new_v4()), &[topics::SCHEDULES])
            .unwrap();
        let record = commands.recv().await.unwrap();
        let Event::ScheduleCommandIssued(issued) = rig.codec.decode(&record.payload).await.unwrap()
        else {
            panic!("not a command")
        };
        let answer = Event::ScheduleCommandAnswered(ScheduleCommandAnswered {
            meta: EventMeta {
                event_id: EventId::from_uuid(Uuid::now_v7()),
                occurred_at: issued.meta.occurred_at,
                actor: None,
            },
            schedule_id: issued.schedule_id,
            command_id: issued.envelope.command_id,
            reply_to: reply_to.into(),
            reply,
        });
        rig.log
            .producer()
            .send(OutRecord {
                topic: topics::SCHEDULE_REPLIES.into(),
                key: reply_to.into(),
                partition: None,
                payload: rig.codec.encode(&answer).await.unwrap(),
            })
            .await
            .unwrap();
        issued
    }

    fn join() -> (ScheduleId, CommandId, Command) {
        (
            ScheduleId::from_uuid(Uuid::now_v7()),
            CommandId::from_uuid(Uuid::now_v7()),
            Command::Join {
                user: UserId::from_uuid(Uuid::now_v7()),
            },
        )
    }

    #[tokio::test]
    async fn the_answer_addressed_to_this_instance_completes_the_request() {
        let rig = rig(Duration::from_secs(10)).await;
        let (schedule, id, command) = join();
        let waiting = {
            let g = rig.gateway.clone();
            let command = command.clone();
            tokio::spawn(async move { g.decide(schedule, id, command).await })
        };
        let status = Reply::Queue(QueueStatus::NotInQueue);
        let issued = answer_next(&rig, "me", status.clone()).await;
        assert_eq!(waiting.await.unwrap(), Ok(status));
        assert_eq!(issued.schedule_id, schedule);
        assert_eq!(issued.envelope.command_id, id);
        assert_eq!(issued.envelope.command, command);
        assert_eq!(issued.reply_to.as_deref(), Some("me"));
        rig.trigger.trigger();
    }

    #[tokio::test]
    async fn no_answer_in_time_is_pending_with_the_command_id() {
        let rig = rig(Duration::from_millis(300)).await;
        let (schedule, id, command) = join();
        let waiting = {
            let g = rig.gateway.clone();
            tokio::spawn(async move { g.decide(schedule, id, command).await })
        };
        // An answer for another instance is not ours.
        answer_next(&rig, "someone-else", Reply::Left).await;
        assert_eq!(waiting.await.unwrap(), Err(GatewayError::Pending(id)));
        rig.trigger.trigger();
    }
}

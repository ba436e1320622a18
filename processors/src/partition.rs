//! One partition's schedules, and the routing of the partition's records to them.
//!
//! Deterministic: the same input records give the same outputs, which is what
//! makes a replay after a crash safe. Its outputs are the partition's changelog:
//! a schedule's `Created` record followed by its facts, in order.

use std::collections::BTreeMap;
use ticketing_domain::events::ScheduleCreated;
use ticketing_domain::ids::{CommandId, ScheduleId};
use ticketing_domain::schedule::{Decision, Envelope, Fact, Reply, ScheduleState, Settings};

/// A record on the schedules topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A schedule is born; it comes first on its partition.
    Created(ScheduleCreated),
    /// A buyer's command for one schedule.
    Command {
        schedule_id: ScheduleId,
        envelope: Envelope,
    },
    /// The clock's pulse for every schedule of the partition (`envelope.command`
    /// is `Tick`).
    Tick(Envelope),
}

/// A record of the changelog (the schedule events topic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created(ScheduleCreated),
    Fact { schedule_id: ScheduleId, fact: Fact },
}

/// The answer to one command, for the ingress that waits on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub schedule_id: ScheduleId,
    pub command_id: CommandId,
    pub reply: Reply,
}

/// What one input produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub changes: Vec<Change>,
    pub answer: Option<Answer>,
}

#[derive(Clone, Debug, Default)]
pub struct PartitionWorker {
    settings: Settings,
    schedules: BTreeMap<ScheduleId, ScheduleState>,
}

impl PartitionWorker {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            schedules: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn schedule(&self, id: ScheduleId) -> Option<&ScheduleState> {
        self.schedules.get(&id)
    }

    pub fn schedules(&self) -> impl Iterator<Item = &ScheduleState> {
        self.schedules.values()
    }

    pub fn handle(&mut self, input: &Input) -> Output {
        match input {
            Input::Created(created) => {
                if self.schedules.contains_key(&created.schedule_id) {
                    // A redelivered creation: the schedule already lives.
                    return Output::default();
                }
                self.schedules
                    .insert(created.schedule_id, ScheduleState::new(created));
                Output {
                    changes: vec![Change::Created(created.clone())],
                    answer: None,
                }
            }
            Input::Command {
                schedule_id,
                envelope,
            } => {
                let Some(state) = self.schedules.get_mut(schedule_id) else {
                    return Output {
                        changes: Vec::new(),
                        answer: Some(Answer {
                            schedule_id: *schedule_id,
                            command_id: envelope.command_id,
                            reply: Reply::UnknownSchedule,
                        }),
                    };
                };
                let Decision { facts, reply } = state.handle(&self.settings, envelope);
                Output {
                    changes: facts
                        .into_iter()
                        .map(|fact| Change::Fact {
                            schedule_id: *schedule_id,
                            fact,
                        })
                        .collect(),
                    answer: Some(Answer {
                        schedule_id: *schedule_id,
                        command_id: envelope.command_id,
                        reply,
                    }),
                }
            }
            Input::Tick(envelope) => {
                let mut changes = Vec::new();
                for (id, state) in &mut self.schedules {
                    let d = state.handle(&self.settings, envelope);
                    changes.extend(d.facts.into_iter().map(|fact| Change::Fact {
                        schedule_id: *id,
                        fact,
                    }));
                }
                Output {
                    changes,
                    answer: None,
                }
            }
        }
    }

    /// Puts back a schedule's state from a snapshot; its changelog records
    /// after the snapshot follow through [`PartitionWorker::restore`].
    pub fn restore_snapshot(&mut self, state: ScheduleState) {
        self.schedules.insert(state.schedule_id, state);
    }

    /// Rebuilds state from the changelog, record by record, in log order.
    pub fn restore(&mut self, change: &Change) {
        match change {
            Change::Created(created) => {
                self.schedules
                    .entry(created.schedule_id)
                    .or_insert_with(|| ScheduleState::new(created));
            }
            Change::Fact { schedule_id, fact } => {
                if let Some(state) = self.schedules.get_mut(schedule_id) {
                    state.apply(fact);
                } else {
                    tracing::error!(%schedule_id, "changelog fact for a schedule with no Created record");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};
    use proptest::prelude::*;
    use ticketing_domain::events::EventMeta;
    use ticketing_domain::ids::*;
    use ticketing_domain::schedule::{Command, SeatRef};
    use uuid::Uuid;

    fn t(s: i64) -> DateTime<Utc> {
        "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(s)
    }

    fn created(n: u128) -> ScheduleCreated {
        ScheduleCreated {
            meta: EventMeta {
                event_id: EventId::from_uuid(Uuid::from_u128(n)),
                occurred_at: t(0),
                actor: None,
            },
            schedule_id: ScheduleId::from_uuid(Uuid::from_u128(n)),
            concert_id: ConcertId::from_uuid(Uuid::from_u128(9)),
            seller_id: UserId::from_uuid(Uuid::from_u128(9)),
            stage_id: StageId::from_uuid(Uuid::from_u128(9)),
            rows: 2,
            cols: 2,
            price: 10,
            concert_date: "2030-02-01".parse().unwrap(),
            concert_time: "19:00:00".parse().unwrap(),
            sale_opens_at: None,
        }
    }

    fn command(schedule: u128, id: u128, at: i64, command: Command) -> Input {
        Input::Command {
            schedule_id: ScheduleId::from_uuid(Uuid::from_u128(schedule)),
            envelope: Envelope {
                command_id: CommandId::from_uuid(Uuid::from_u128(id)),
                at: t(at),
                seed: 1,
                command,
            },
        }
    }

    #[test]
    fn unknown_schedules_are_answered_not_created() {
        let mut w = PartitionWorker::new(Settings::default());
        let out = w.handle(&command(5, 1, 1, Command::Tick));
        assert_eq!(out.answer.unwrap().reply, Reply::UnknownSchedule);
        assert!(out.changes.is_empty());
    }

    #[test]
    fn a_redelivered_creation_does_not_reset_the_schedule() {
        let mut w = PartitionWorker::new(Settings::default());
        w.handle(&Input::Created(created(1)));
        let user = UserId::from_uuid(Uuid::from_u128(50));
        w.handle(&command(1, 2, 1, Command::Join { user }));
        assert!(w.handle(&Input::Created(created(1))).changes.is_empty());
        assert_eq!(
            w.schedule(ScheduleId::from_uuid(Uuid::from_u128(1)))
                .unwrap()
                .active(),
            1
        );
    }

    proptest! {
        /// The changelog rebuilds every schedule of the partition exactly, from
        /// any interleaving of commands over several schedules and ticks.
        #[test]
        fn the_changelog_restores_the_partition(ops in prop::collection::vec((0u128..3, 0u8..6, 0u16..3, 0u16..3, 0i64..400), 1..120)) {
            let settings = Settings { max_active: 2, admission_ttl_secs: 100, hold_ttl_secs: 50, payment_ttl_secs: 30, max_seats_per_user: 2 };
            let mut w = PartitionWorker::new(settings);
            let mut log = Vec::new();
            for s in 0..3 {
                log.extend(w.handle(&Input::Created(created(100 + s))).changes);
            }
            let mut at = 0;
            for (i, (s, kind, row, col, dt)) in ops.into_iter().enumerate() {
                at += dt / 10;
                let user = UserId::from_uuid(Uuid::from_u128(u128::from(kind % 3)));
                let id = 1_000 + i as u128;
                let cmd = match kind {
                    0 | 1 => Command::Join { user },
                    2 => Command::Leave { user },
                    _ => Command::Hold { user, seats: vec![SeatRef { row: row + 1, col: col + 1 }], booking_ids: vec![BookingId::from_uuid(Uuid::from_u128(id))] },
                };
                let input = if kind == 5 {
                    Input::Tick(Envelope { command_id: CommandId::from_uuid(Uuid::from_u128(id)), at: t(at), seed: 3, command: Command::Tick })
                } else {
                    command(100 + s, id, at, cmd)
                };
                log.extend(w.handle(&input).changes);
            }
            let mut restored = PartitionWorker::new(settings);
            for c in &log {
                restored.restore(c);
            }
            let a: Vec<_> = w.schedules().collect();
            let b: Vec<_> = restored.schedules().collect();
            prop_assert_eq!(a, b);
        }
    }
}

//! The one place topic names, keys and partition counts are written down.
//! `TOPICS.md` mirrors this table for humans; a test keeps the two in step.
//!
//! Several event types share a topic when they share an owner, so that one
//! consumer sees them in the order they happened (a schedule's creation and
//! every later command on it land on one partition). Subjects in the schema
//! registry are therefore named per topic *and* record
//! (`TopicRecordNameStrategy`), see [`subject`].

use ticketing_domain::events::Event;

/// How one topic is laid out. Partition counts only ever grow, and growing one
/// moves keys between partitions, so they are sized for the expected peak now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    /// `i32` because that is what Kafka's admin API takes.
    pub partitions: i32,
    /// Which id the record key holds.
    pub key: &'static str,
    pub description: &'static str,
    /// Compacted topics keep the newest record per key (state); the others are
    /// event logs kept by time.
    pub compacted: bool,
}

pub const ACCOUNTS: &str = "ticketing.accounts.v1";
pub const CATALOG: &str = "ticketing.catalog.v1";
pub const SCHEDULES: &str = "ticketing.schedules.v1";
pub const SCHEDULE_EVENTS: &str = "ticketing.schedule-events.v1";
pub const SCHEDULE_REPLIES: &str = "ticketing.schedule-replies.v1";
pub const SCHEDULE_SNAPSHOTS: &str = "ticketing.schedule-snapshots.v1";
pub const PAYMENTS: &str = "ticketing.payments.v1";
pub const REQUEST_LOGS: &str = "ticketing.request-logs.v1";

pub const ALL: &[TopicSpec] = &[
    TopicSpec {
        name: ACCOUNTS,
        partitions: 6,
        key: "user_id",
        description: "Account lifecycle: UserRegistered.",
        compacted: false,
    },
    TopicSpec {
        name: CATALOG,
        partitions: 6,
        key: "stage_id / concert_id",
        description: "What sellers put on sale: StageCreated, ConcertCreated.",
        compacted: false,
    },
    TopicSpec {
        // The hot topic: every queue and seat command of a schedule goes here,
        // so it gets the most partitions (the unit of processor parallelism).
        name: SCHEDULES,
        partitions: 12,
        key: "schedule_id",
        description: "Everything asked of a schedule: ScheduleCreated, ScheduleCommandIssued, ScheduleTicked. The schedule processor's input.",
        compacted: false,
    },
    TopicSpec {
        // Partition p is the changelog of input partition p: a restoring
        // processor reads the partition with its input's number, so both
        // topics must always have the same count.
        name: SCHEDULE_EVENTS,
        partitions: 12,
        key: "schedule_id",
        description: "The schedule processor's decisions and changelog: ScheduleInitialised, ScheduleFactRecorded. Event-sourced, kept forever (retention.ms=-1), never compacted: every fact matters.",
        compacted: false,
    },
    TopicSpec {
        name: SCHEDULE_REPLIES,
        partitions: 6,
        key: "reply_to",
        description: "Answers to commands, for the ingress instance that waits (ScheduleCommandAnswered). Worth nothing after the request's timeout: short retention.",
        compacted: false,
    },
    TopicSpec {
        // Partition p holds the snapshots of changelog partition p.
        name: SCHEDULE_SNAPSHOTS,
        partitions: 12,
        key: "schedule_id / checkpoint-<partition>",
        description: "The schedule processor's snapshots, so a restore need not read the changelog from its start: ScheduleSnapshotted (one schedule's state), SnapshotsCheckpointed (where a partition's restore starts in the changelog). Compacted: the latest of each key is all that matters.",
        compacted: true,
    },
    TopicSpec {
        name: PAYMENTS,
        partitions: 6,
        key: "payment_id",
        description: "Every change of a payment with the whole payment after it (PaymentChanged): the sinks' source for payments by user, by day and refunds, and the managers' live view. Kept forever (retention.ms=-1): the settlement and a rebuild of the tables replay it.",
        compacted: false,
    },
    TopicSpec {
        name: REQUEST_LOGS,
        partitions: 6,
        key: "user_id / request id",
        description: "Every HTTP request the ingress answered (RequestLogged): time, caller, method, path, status, latency. Kept for TICKETING_REQUEST_LOG_RETENTION_DAYS (7 by default).",
        compacted: false,
    },
];

/// Topic-level settings beyond partitions and compaction, as Kafka config
/// pairs, for whoever creates the topics.
pub fn configs(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        SCHEDULE_EVENTS => &[("retention.ms", "-1"), ("retention.bytes", "-1")],
        SCHEDULE_REPLIES => &[("retention.ms", "3600000")],
        // One schedule's state in a flash sale of 100 000 buyers is a few MB
        // of JSON; the producer compresses it.
        SCHEDULE_SNAPSHOTS => &[("max.message.bytes", "33554432")],
        PAYMENTS => &[("retention.ms", "-1"), ("retention.bytes", "-1")],
        _ => &[],
    }
}

/// The topic an event is produced to.
pub fn topic_for(event: &Event) -> &'static str {
    match event {
        Event::UserRegistered(_) => ACCOUNTS,
        Event::StageCreated(_) | Event::ConcertCreated(_) => CATALOG,
        Event::ScheduleCreated(_) | Event::ScheduleCommandIssued(_) | Event::ScheduleTicked(_) => {
            SCHEDULES
        }
        Event::ScheduleInitialised(_) | Event::ScheduleFactRecorded(_) => SCHEDULE_EVENTS,
        Event::ScheduleCommandAnswered(_) => SCHEDULE_REPLIES,
        Event::ScheduleSnapshotted(_) | Event::SnapshotsCheckpointed(_) => SCHEDULE_SNAPSHOTS,
        Event::PaymentChanged(_) => PAYMENTS,
        Event::RequestLogged(_) => REQUEST_LOGS,
    }
}

/// The same mapping by event name (`Event::name`), for code that holds a
/// schema rather than an event, such as registration at start-up.
pub fn topic_for_event_name(name: &str) -> Option<&'static str> {
    match name {
        "UserRegistered" => Some(ACCOUNTS),
        "StageCreated" | "ConcertCreated" => Some(CATALOG),
        "ScheduleCreated" | "ScheduleCommandIssued" | "ScheduleTicked" => Some(SCHEDULES),
        "ScheduleInitialised" | "ScheduleFactRecorded" => Some(SCHEDULE_EVENTS),
        "ScheduleCommandAnswered" => Some(SCHEDULE_REPLIES),
        "ScheduleSnapshotted" | "SnapshotsCheckpointed" => Some(SCHEDULE_SNAPSHOTS),
        "PaymentChanged" => Some(PAYMENTS),
        "RequestLogged" => Some(REQUEST_LOGS),
        _ => None,
    }
}

/// The layout of a declared topic.
pub fn spec(name: &str) -> Option<&'static TopicSpec> {
    ALL.iter().find(|t| t.name == name)
}

/// The registry subject of a record on a topic (`TopicRecordNameStrategy`):
/// one compatibility history per event type and topic.
pub fn subject(topic: &str, record_full_name: &str) -> String {
    format!("{topic}-{record_full_name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_partitioned() {
        let names: HashSet<_> = ALL.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|t| t.partitions > 0));
    }

    #[test]
    fn every_changelog_partition_has_its_input_partition() {
        assert_eq!(
            spec(SCHEDULE_EVENTS).unwrap().partitions,
            spec(SCHEDULES).unwrap().partitions
        );
        assert_eq!(
            spec(SCHEDULE_SNAPSHOTS).unwrap().partitions,
            spec(SCHEDULES).unwrap().partitions
        );
        assert_eq!(
            configs(SCHEDULE_EVENTS),
            &[("retention.ms", "-1"), ("retention.bytes", "-1")]
        );
    }

    #[test]
    fn both_mappings_agree_and_name_declared_topics() {
        for event in samples::every_event() {
            let topic = topic_for(&event);
            assert!(spec(topic).is_some(), "{topic} is not in ALL");
            assert_eq!(topic_for_event_name(event.name()), Some(topic));
        }
        assert_eq!(topic_for_event_name("NoSuchEvent"), None);
    }

    /// Each topic must have a row in TOPICS.md with its name, partition count
    /// and key, so the doc cannot drift from this table.
    #[test]
    fn topics_md_lists_every_topic() {
        let doc = include_str!("../TOPICS.md");
        for t in ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with('|') && l.contains(&format!("`{}`", t.name)))
                .unwrap_or_else(|| panic!("TOPICS.md has no row for {}", t.name));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert!(
                cells.contains(&t.partitions.to_string().as_str()),
                "TOPICS.md: partitions of {} should be {}",
                t.name,
                t.partitions
            );
            assert!(
                cells.iter().any(|c| c.trim_matches('`') == t.key),
                "TOPICS.md: key of {} should be {}",
                t.name,
                t.key
            );
            let compacted = if t.compacted { "yes" } else { "no" };
            assert!(
                cells.contains(&compacted),
                "TOPICS.md: compacted of {}",
                t.name
            );
        }
        let rows = doc
            .lines()
            .filter(|l| l.starts_with("| `ticketing."))
            .count();
        assert_eq!(rows, ALL.len(), "TOPICS.md lists a topic the code does not");
    }
}

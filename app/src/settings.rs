//! Settings, as flags or environment variables (flags win). Secrets are read from
//! the environment or flags and never printed (`hide_env_values`).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ticketing",
    version,
    about = "High-performance ticketing platform"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole platform in one process, with embedded log and store: no
    /// external service needed. Data lives under TICKETING_DATA_DIR.
    Dev(DevSettings),
    /// The HTTP front against the real stack (Kafka, CQL, Redis, schema registry).
    Ingress(IngressSettings),
    /// The sinks against the real stack: the catalog into CQL, the schedules'
    /// read model into Redis.
    Sink(SinkSettings),
    /// The schedule processor against the real stack: waiting rooms and seat
    /// ownership, one writer per partition of the schedules topic.
    Processor(ProcessorSettings),
    /// The sandbox payment provider over HTTP (a Korean PG's API with test
    /// cards), for the real stack and staging. Keeps its books in memory.
    PgSandbox(PgSandboxSettings),
}

#[derive(Args, Debug, Clone)]
pub struct PgSandboxSettings {
    /// Where the sandbox PG listens.
    #[arg(long, env = "TICKETING_PG_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The secret key callers authenticate with (HTTP Basic user name).
    #[arg(long, env = "TICKETING_PG_SECRET_KEY")]
    pub secret_key: String,
    /// How long the card that "times out" keeps its caller waiting.
    #[arg(long, env = "TICKETING_PG_TIMEOUT_DELAY_MS", default_value_t = 15_000)]
    pub timeout_delay_ms: u64,
}

/// How schedules are decided. The processor decides with them and the ingress
/// computes waiting times with them, so both read the same variables.
#[derive(Args, Debug, Clone, Copy)]
pub struct ScheduleSettings {
    /// Buyers of one schedule ADMITTED at once.
    #[arg(long, env = "TICKETING_ADMISSION_MAX_ACTIVE", default_value_t = 500)]
    pub admission_max_active: u32,
    /// How long an admission lasts.
    #[arg(long, env = "TICKETING_ADMISSION_TTL_SECS", default_value_t = 600)]
    pub admission_ttl_secs: i64,
    /// How long a hold lasts before its seats go back on sale.
    #[arg(long, env = "TICKETING_HOLD_TTL_SECS", default_value_t = 300)]
    pub hold_ttl_secs: i64,
    /// Seats one buyer may hold or own in one schedule.
    #[arg(long, env = "TICKETING_MAX_SEATS_PER_USER", default_value_t = 4)]
    pub max_seats_per_user: u32,
    /// How long a started payment keeps its held seats from expiring while
    /// the charge is under way.
    #[arg(long, env = "TICKETING_PAYMENT_TTL_SECS", default_value_t = 120)]
    pub payment_ttl_secs: i64,
}

impl ScheduleSettings {
    pub fn core(&self) -> anyhow::Result<ticketing_domain::schedule::Settings> {
        anyhow::ensure!(
            self.admission_max_active >= 1,
            "TICKETING_ADMISSION_MAX_ACTIVE must be at least 1"
        );
        anyhow::ensure!(
            self.admission_ttl_secs >= 1,
            "TICKETING_ADMISSION_TTL_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.hold_ttl_secs >= 1,
            "TICKETING_HOLD_TTL_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.max_seats_per_user >= 1,
            "TICKETING_MAX_SEATS_PER_USER must be at least 1"
        );
        anyhow::ensure!(
            self.payment_ttl_secs >= 1,
            "TICKETING_PAYMENT_TTL_SECS must be at least 1"
        );
        Ok(ticketing_domain::schedule::Settings {
            max_active: self.admission_max_active,
            admission_ttl_secs: self.admission_ttl_secs,
            hold_ttl_secs: self.hold_ttl_secs,
            payment_ttl_secs: self.payment_ttl_secs,
            max_seats_per_user: self.max_seats_per_user,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct HttpSettings {
    /// Where the HTTP API listens.
    #[arg(long, env = "TICKETING_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The first MANAGER account, created at start-up if missing.
    #[arg(long, env = "TICKETING_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    #[arg(long, env = "TICKETING_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Signs access tokens (at least 32 bytes). `dev` generates and keeps one.
    #[arg(long, env = "TICKETING_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Phone encryption keys, `kid:base64(32 bytes)[,kid:key...]`; the first
    /// encrypts, all decrypt. `dev` generates and keeps one.
    #[arg(long, env = "TICKETING_PHONE_KEYS", hide_env_values = true)]
    pub phone_keys: Option<String>,
    /// Card encryption keys, in the same form as the phone keys and kept
    /// apart from them. `dev` generates and keeps one.
    #[arg(long, env = "TICKETING_CARD_KEYS", hide_env_values = true)]
    pub card_keys: Option<String>,
    #[arg(long, env = "TICKETING_ACCESS_TTL_SECS", default_value_t = 900)]
    pub access_ttl_secs: i64,
    #[arg(long, env = "TICKETING_REFRESH_TTL_SECS", default_value_t = 14 * 24 * 3600)]
    pub refresh_ttl_secs: i64,
    /// How long a queue or seat request waits for the processor's decision
    /// before answering 503 DECISION_PENDING (retry-safe with its command id).
    #[arg(long, env = "TICKETING_DECISION_TIMEOUT_MS", default_value_t = 5000)]
    pub decision_timeout_ms: u64,
    /// A payment whose charge or refund has been in flight this long is
    /// taken as cut short (its ingress died) and finished by the sweeper,
    /// which asks the provider and never charges.
    #[arg(long, env = "TICKETING_PAYMENT_SWEEP_AFTER_SECS", default_value_t = 60)]
    pub payment_sweep_after_secs: u64,
    #[command(flatten)]
    pub schedules: ScheduleSettings,
}

#[derive(Args, Debug, Clone)]
pub struct DevSettings {
    #[command(flatten)]
    pub http: HttpSettings,
    /// Where `dev` keeps its log, store and generated secrets.
    #[arg(long, env = "TICKETING_DATA_DIR", default_value = ".ticketing-data")]
    pub data_dir: PathBuf,
    /// How long request logs are kept.
    #[arg(
        long,
        env = "TICKETING_REQUEST_LOG_RETENTION_DAYS",
        default_value_t = 7
    )]
    pub request_log_retention_days: u32,
}

#[derive(Args, Debug, Clone)]
pub struct StackSettings {
    #[arg(
        long,
        env = "TICKETING_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub kafka_brokers: String,
    /// librdkafka's debug contexts for every Kafka client of this process
    /// (e.g. `cgrp,eos,consumer`); logged at debug level, so also set
    /// `RUST_LOG=librdkafka=debug`. Unset in normal operation.
    #[arg(long, env = "TICKETING_KAFKA_DEBUG")]
    pub kafka_debug: Option<String>,
    /// Comma-separated CQL contact points.
    #[arg(
        long,
        env = "TICKETING_CQL_NODES",
        default_value = "127.0.0.1:9042",
        value_delimiter = ','
    )]
    pub cql_nodes: Vec<String>,
    #[arg(long, env = "TICKETING_CQL_KEYSPACE", default_value = "ticketing")]
    pub cql_keyspace: String,
    #[arg(
        long,
        env = "TICKETING_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    #[arg(
        long,
        env = "TICKETING_SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub schema_registry_url: String,
    /// How long request logs are kept: the topic's retention when this
    /// process creates it, and the TTL of the rows the sink writes.
    #[arg(
        long,
        env = "TICKETING_REQUEST_LOG_RETENTION_DAYS",
        default_value_t = 7
    )]
    pub request_log_retention_days: u32,
    /// Liveness (`/healthz`) fails once a Kafka consumer of this process has
    /// not polled, committed a transaction or read a restore for this long:
    /// the process is wedged and an orchestrator should restart it. A broker
    /// outage is not a stall (the consumer keeps polling).
    #[arg(long, env = "TICKETING_STALL_AFTER_SECS", default_value_t = 120)]
    pub stall_after_secs: u64,
    /// Readiness (`/readyz`) of a processor or sink fails once one of its
    /// consumers has been outside its group this long (a rebalance takes a
    /// member out for a moment).
    #[arg(long, env = "TICKETING_OUTSIDE_GROUP_AFTER_SECS", default_value_t = 30)]
    pub outside_group_after_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct IngressSettings {
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub stack: StackSettings,
    /// The payment provider's API (the sandbox PG in the local stack).
    #[arg(long, env = "TICKETING_PG_URL")]
    pub pg_url: Option<String>,
    /// The secret key this platform authenticates to the provider with.
    #[arg(long, env = "TICKETING_PG_SECRET_KEY", hide_env_values = true)]
    pub pg_secret_key: Option<String>,
    /// How long one call to the provider may take before its outcome counts
    /// as unknown (and is asked for instead of retried).
    #[arg(long, env = "TICKETING_PG_TIMEOUT_MS", default_value_t = 10_000)]
    pub pg_timeout_ms: u64,
}

#[derive(Args, Debug, Clone)]
pub struct SinkSettings {
    #[command(flatten)]
    pub stack: StackSettings,
    /// Where /healthz, /readyz and /metrics listen.
    #[arg(long, env = "TICKETING_OPS_LISTEN", default_value = "127.0.0.1:9102")]
    pub ops_listen: SocketAddr,
    /// The Kafka consumer group. Instances of one sink share it (and split the
    /// partitions); a sink writing elsewhere (another keyspace) needs its own.
    #[arg(long, env = "TICKETING_SINK_GROUP", default_value = "catalog-sink")]
    pub group: String,
    #[command(flatten)]
    pub schedules: ScheduleSettings,
}

#[derive(Args, Debug, Clone)]
pub struct ProcessorSettings {
    #[command(flatten)]
    pub stack: StackSettings,
    #[command(flatten)]
    pub schedules: ScheduleSettings,
    /// Where /healthz, /readyz and /metrics listen.
    #[arg(long, env = "TICKETING_OPS_LISTEN", default_value = "127.0.0.1:9101")]
    pub ops_listen: SocketAddr,
    /// The consumer group the instances share; they split the partitions.
    #[arg(
        long,
        env = "TICKETING_PROCESSOR_GROUP",
        default_value = "schedule-processor"
    )]
    pub group: String,
    /// This instance's stable name, the Kafka transactional id: a restarted
    /// instance with the same name fences its previous self. A StatefulSet's pod
    /// name is the natural choice.
    #[arg(long, env = "TICKETING_INSTANCE_ID", default_value = "processor-0")]
    pub instance_id: String,
    /// Changelog records of a partition between two rounds of snapshots: a
    /// partition's restore reads its snapshots and at most about this many
    /// changelog records.
    #[arg(long, env = "TICKETING_SNAPSHOT_EVERY", default_value_t = 20_000)]
    pub snapshot_every: usize,
}

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
    /// The catalog sink against the real stack.
    Sink(SinkSettings),
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
    #[arg(long, env = "TICKETING_ACCESS_TTL_SECS", default_value_t = 900)]
    pub access_ttl_secs: i64,
    #[arg(long, env = "TICKETING_REFRESH_TTL_SECS", default_value_t = 14 * 24 * 3600)]
    pub refresh_ttl_secs: i64,
}

#[derive(Args, Debug, Clone)]
pub struct DevSettings {
    #[command(flatten)]
    pub http: HttpSettings,
    /// Where `dev` keeps its log, store and generated secrets.
    #[arg(long, env = "TICKETING_DATA_DIR", default_value = ".ticketing-data")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct StackSettings {
    #[arg(
        long,
        env = "TICKETING_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub kafka_brokers: String,
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
}

#[derive(Args, Debug, Clone)]
pub struct IngressSettings {
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub stack: StackSettings,
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
}

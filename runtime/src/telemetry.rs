use tracing_subscriber::{fmt, EnvFilter};

/// Structured logs to stderr. `RUST_LOG` filters (default `info`);
/// `TICKETING_LOG_FORMAT=json` switches to one JSON object a line for log shippers.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TICKETING_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // try_init: tests and embedded runs may call this more than once.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

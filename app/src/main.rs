use clap::Parser;
use ticketing::settings::{Cli, Command};
use ticketing_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let cli = Cli::parse();
    let (trigger, stop) = shutdown::channel();
    tokio::spawn(async move {
        shutdown::os_signal().await;
        tracing::info!("shutting down");
        trigger.trigger();
    });
    match cli.command {
        Command::Dev(s) => {
            let listener = tokio::net::TcpListener::bind(s.http.listen).await?;
            ticketing::dev::run(s, listener, stop).await
        }
        Command::Ingress(s) => {
            let listener = tokio::net::TcpListener::bind(s.http.listen).await?;
            ticketing::stack::run_ingress(s, listener, stop).await
        }
        Command::Sink(s) => {
            let listener = tokio::net::TcpListener::bind(s.ops_listen).await?;
            ticketing::stack::run_sink(s, listener, stop).await
        }
        Command::Processor(s) => {
            let listener = tokio::net::TcpListener::bind(s.ops_listen).await?;
            ticketing::stack::run_processor(s, listener, stop).await
        }
        Command::PgSandbox(s) => {
            let listener = tokio::net::TcpListener::bind(s.listen).await?;
            ticketing::pg_sandbox::run(s, listener, stop).await
        }
    }
}

//! Payments leave the platform here. The rest of the platform talks to the
//! [`provider::PaymentProvider`] port; behind it sit [`http::PgClient`] (a
//! Korean PG's HTTP API) and [`sandbox::SandboxProvider`], the PG the project
//! runs itself: in process for `ticketing dev`, and over HTTP
//! ([`http::sandbox_router`]) for the real stack.

pub mod http;
pub mod provider;
pub mod sandbox;

pub use provider::*;

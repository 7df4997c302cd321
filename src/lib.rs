//! iap-proxy: a localhost proxy that puts a fresh Google IAP ID token on every request.
//!
//! # Layout
//! The folders name the architecture; dependencies point one way, down this list (a module
//! never imports one above it):
//! - `main.rs` — the binary: parse flags, load settings, start logging, [`serve`].
//! - `run/` — start-up: bind every listener, build each route (audience, token cache,
//!   upstream clients), serve, reload changed files, drain on shutdown.
//! - [`check`] — `iap-proxy check`: run a route once and explain each usual mistake.
//! - `proxy/` — the data path: listener, server, each client connection (its slot,
//!   deadlines, the socket as hyper sees it), the bounded queue, one request's way (headers,
//!   token, attempts and timeouts, upgrades), the proxy's own answers, the client secret.
//! - `ops/` — operations: admin endpoints, Prometheus metrics, the access log, logging.
//! - `iap/` — IAP's own conventions: its generated-response header, the sign-in redirect's
//!   client ID, audience discovery.
//! - `auth/` — credentials: finding them (ADC order), one file per source, the token cache
//!   that keeps one fresh ID token, the HTTP client for Google's endpoints.
//! - `outbound/` — outbound connections: trust roots, pooled upstream clients (and how they
//!   notice dead connections), replayable request bodies, which failures may be retried,
//!   egress through `HTTPS_PROXY`.
//! - [`config`] — flags > env `IAP_PROXY_*` > TOML file > defaults, validated all at once.
#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

mod auth;
pub mod check;
pub mod config;
mod iap;
mod ops;
mod outbound;
mod proxy;
mod run;

pub use auth::IdToken;
pub use ops::telemetry;
pub use proxy::listener;
pub use proxy::server::Drain;
pub use run::{BindTarget, Listeners, StartError, fetch_token, run, serve, serve_with_reload};

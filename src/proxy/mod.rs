//! The data path: a client's request, from the listener to the upstream and back.
//!
//! - [`listener`] — TCP or Unix-socket listeners.
//! - [`server`] — accept (up to `--max-connections`), HTTP/1.1 + h2c, drain on shutdown.
//! - `observe` — metrics and the access log for every answered request.
//! - `admit` — what a request must satisfy before anything else: Host, Origin, framing,
//!   upgrades, the client secret (`client_secret`).
//! - `forward` — one request's way: rewrite, token, forward, stream back.
//! - `headers` — hop-by-hop, forwarding, token and `Location` header rules.
//! - `refusal` — the warning when IAP refuses fresh tokens too, quoting IAP.
//! - `upgrade` — WebSocket tunnels.
//! - `body`, `error` — what the proxy answers: streamed bodies, and its own errors.

pub(crate) mod admit;
pub(crate) mod body;
pub(crate) mod client_secret;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod headers;
pub mod listener;
mod observe;
mod refusal;
pub(crate) mod server;
mod upgrade;

//! The data path: a client's request, from the listener to the upstream and back.
//!
//! - [`listener`] — TCP or Unix-socket listeners.
//! - [`server`] — accept (up to `--max-connections`), HTTP/1.1 + h2c, drain on shutdown.
//! - `pipeline` — a connection's service: the steps below, in order, as one service.
//! - `observe` — metrics and the access log for every answered request.
//! - `admit` — what a request must satisfy before anything else: Host, Origin, framing,
//!   upgrades, the client secret (`client_secret`).
//! - `conn`, `conn_io`, `track` — one client connection: its slot (kept by tunnels), its
//!   requests in flight, its header-read and idle deadlines, the rapid-reset budget, and the
//!   socket as hyper sees it (hyper's own error answers replaced by ours).
//! - `queue` — `--max-concurrent-requests` with a bounded queue.
//! - `shared` — what every request of a route shares (upstream, clients, token cache).
//! - `forward` — one request's way: rewrite, token, forward, stream back; `exchange` —
//!   the attempts (retries) and the timeouts of one request.
//! - `headers` — hop-by-hop, forwarding, token and `Location` header rules.
//! - `refusal` — the warning when IAP refuses fresh tokens too, quoting IAP.
//! - `upgrade` — WebSocket tunnels.
//! - `body`, `error` — what the proxy answers: streamed bodies, and its own errors.

pub(crate) mod admit;
pub(crate) mod body;
pub(crate) mod client_secret;
mod conn;
mod conn_io;
pub(crate) mod error;
mod exchange;
pub(crate) mod forward;
pub(crate) mod headers;
pub mod listener;
mod observe;
mod pipeline;
mod queue;
mod refusal;
pub(crate) mod server;
pub(crate) mod shared;
mod track;
mod upgrade;

//! The body of every answer the proxy gives its clients: the upstream's streamed body
//! (counted as it passes), or the proxy's own short text.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Boxed once per response, so the upstream's body and the proxy's own answers share a type.
pub(crate) type ResBody = BoxBody<Bytes, hyper::Error>;

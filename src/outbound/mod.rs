//! Outbound connections: trust roots, the pooled upstream clients (and how they notice dead
//! connections), the bodies they carry (replayable while small), which failures may be
//! retried, and egress through a corporate proxy. Google's token endpoints use the same roots and
//! egress (see `auth::http`).

pub(crate) mod activity;
pub(crate) mod body;
pub(crate) mod clients;
pub(crate) mod egress;
pub(crate) mod retry;
#[cfg(test)]
mod retry_tests;
pub(crate) mod reuse;
pub(crate) mod tls;

/// The TLS error inside a connection error, if that is what it is: where the certificate
/// problem is (so a message can point at `--upstream-ca`). The rustls error arrives wrapped
/// in io::Errors (tokio-rustls' InvalidData, then the connector's Other), whose `source()`
/// skips the wrapped error, so each one is opened with `get_ref`.
pub(crate) fn tls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let mut inner = e;
        // Bounded: wrappers are few, and a cycle must not hang the caller.
        for _ in 0..8 {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(next) => inner = next,
                None => break,
            }
        }
        cur = e.source();
    }
    None
}

/// The error and its causes on one line: hyper's errors keep the useful part
/// ("invalid peer certificate: UnknownIssuer") in their sources.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_sources_once() {
        let inner = std::io::Error::other("UnknownIssuer");
        let outer = std::io::Error::other(inner);
        assert_eq!(chain(&outer), "UnknownIssuer");
    }
}

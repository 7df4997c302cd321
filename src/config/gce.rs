//! `GCE_METADATA_HOST`: where Google's libraries (and so this proxy) look for the metadata
//! server. Read in one place because three parts must agree on it: credential discovery
//! probes it, the metadata token source asks it, and egress always dials it directly.

use super::env::Env;

/// The metadata server's name on Google Cloud, when `GCE_METADATA_HOST` is not set.
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// The metadata server's address: `host[:port]`, as `GCE_METADATA_HOST` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetadataHost {
    authority: String,
}

impl Env {
    /// `GCE_METADATA_HOST`, else [`DEFAULT_METADATA_HOST`]. Some tools write the variable
    /// with an `http://` scheme or a trailing slash; both are tolerated and dropped.
    pub(crate) fn metadata_host(&self) -> MetadataHost {
        let authority = self
            .get("GCE_METADATA_HOST")
            .map(|h| h.trim().trim_start_matches("http://").trim_end_matches('/'))
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_METADATA_HOST);
        MetadataHost {
            authority: authority.to_owned(),
        }
    }
}

impl MetadataHost {
    /// `host[:port]` as written: what URLs and messages use. Not checked here: a value that
    /// is no host at all is reported by whoever builds a URL from it.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The host alone: `[v6]:port` and `[v6]` give `v6`, `host:port` gives `host`; a bare
    /// IPv6 address is kept whole.
    pub(crate) fn host(&self) -> &str {
        self.split().0
    }

    /// The port, when the value names one.
    pub(crate) fn port(&self) -> Option<u16> {
        self.split().1
    }

    fn split(&self) -> (&str, Option<u16>) {
        let a = self.authority.as_str();
        if let Some(rest) = a.strip_prefix('[') {
            return match rest.split_once(']') {
                Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
                None => (rest, None),
            };
        }
        match a.split_once(':') {
            Some((host, port)) if !port.contains(':') => match port.parse() {
                Ok(port) => (host, Some(port)),
                Err(_) => (a, None),
            },
            _ => (a, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (authority, host, port)
    type Parsed = (String, String, Option<u16>);

    fn parsed(value: Option<&str>) -> Parsed {
        let env = Env::from_pairs(value.map(|v| ("GCE_METADATA_HOST", v)));
        let m = env.metadata_host();
        (m.authority().to_owned(), m.host().to_owned(), m.port())
    }

    #[test]
    fn one_reading_of_gce_metadata_host() {
        let d = DEFAULT_METADATA_HOST.to_owned();
        let s = |v: &str| v.to_owned();
        let cases: &[(Option<&str>, Parsed)] = &[
            (None, (d.clone(), d.clone(), None)),
            (Some("  "), (d.clone(), d.clone(), None)),
            (Some("http:///"), (d.clone(), d.clone(), None)),
            (
                Some("10.9.9.9:8080"),
                (s("10.9.9.9:8080"), s("10.9.9.9"), Some(8080)),
            ),
            (
                Some(" http://127.0.0.1:8999/ "),
                (s("127.0.0.1:8999"), s("127.0.0.1"), Some(8999)),
            ),
            (Some("metadata"), (s("metadata"), s("metadata"), None)),
            (Some("[::1]:80"), (s("[::1]:80"), s("::1"), Some(80))),
            (Some("[::1]"), (s("[::1]"), s("::1"), None)),
            (Some("::1"), (s("::1"), s("::1"), None)),
            (Some("host:http"), (s("host:http"), s("host:http"), None)),
        ];
        for (value, want) in cases {
            assert_eq!(&parsed(*value), want, "{value:?}");
        }
    }
}

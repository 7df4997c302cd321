//! Which credential to use, found the way Google's libraries find it (Application Default
//! Credentials): `--credentials`, `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file,
//! then the metadata server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::error::{APPLICATION_CREDENTIALS, CredentialError, FoundBy, Looked, ProbeFailure};
use crate::config::{Env, Origin};

/// `--credentials gcloud` means the gcloud CLI; write `./gcloud` for a file of that name.
pub(crate) const GCLOUD: &str = "gcloud";
const ADC_FILE: &str = "application_default_credentials.json";
/// Pause after the first failed metadata probe; it doubles up to [`MAX_PROBE_PAUSE`].
const FIRST_PROBE_PAUSE: Duration = Duration::from_millis(100);
const MAX_PROBE_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    File {
        path: PathBuf,
        found_by: FoundBy,
    },
    /// `credentials = "gcloud"`, given in this layer.
    Gcloud(Origin),
    Metadata {
        host: String,
    },
}

impl Found {
    /// How it was found, for logs and `iap-proxy check`.
    pub(crate) fn found_by(&self) -> FoundBy {
        match self {
            Found::File { found_by, .. } => found_by.clone(),
            Found::Gcloud(origin) => FoundBy::Setting(origin.clone()),
            Found::Metadata { .. } => FoundBy::MetadataServer,
        }
    }
}

/// The credentials setting: its value, and the layer that gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Explicit<'a> {
    pub(crate) path: Option<&'a Path>,
    pub(crate) origin: &'a Origin,
}

/// The credential files to try, in order, and what was looked at on the way.
pub(crate) fn find_file(
    explicit: Explicit<'_>,
    env: &Env,
    looked: &mut Vec<Looked>,
) -> Option<Found> {
    if let Some(path) = explicit.path {
        if path == Path::new(GCLOUD) {
            return Some(Found::Gcloud(explicit.origin.clone()));
        }
        return Some(Found::File {
            path: path.to_path_buf(),
            found_by: FoundBy::Setting(explicit.origin.clone()),
        });
    }
    looked.push(Looked::CredentialsFlag);
    if let Some(path) = env.get(APPLICATION_CREDENTIALS) {
        // Named explicitly: a missing file is an error, not a reason to look further.
        return Some(Found::File {
            path: PathBuf::from(path),
            found_by: FoundBy::ApplicationCredentials,
        });
    }
    looked.push(Looked::ApplicationCredentialsVar);
    let dir = match (env.get("CLOUDSDK_CONFIG"), env.get("HOME")) {
        (Some(dir), _) => Some(PathBuf::from(dir)),
        (None, Some(home)) => Some(Path::new(home).join(".config").join("gcloud")),
        (None, None) => None,
    };
    match dir.map(|d| d.join(ADC_FILE)) {
        Some(path) if path.is_file() => {
            return Some(Found::File {
                path,
                found_by: FoundBy::AdcFile,
            });
        }
        Some(path) => looked.push(Looked::AdcFileAbsent(path)),
        None => looked.push(Looked::NoGcloudConfigDir),
    }
    None
}

/// Whether a metadata server answers at `host` (`host[:port]`), asking again with backoff
/// for up to `wait`: on GKE the metadata server may start after the pod's containers. A
/// name that does not resolve, or an answer from something else, ends the wait at once:
/// that is a machine off Google Cloud, and a laptop should not wait for nothing.
pub(crate) async fn probe_metadata(
    host: &str,
    port: u16,
    wait: Duration,
) -> Result<(), ProbeFailure> {
    let deadline = Instant::now() + wait;
    let no_answer = |attempts| ProbeFailure::NoAnswer {
        waited: wait,
        attempts,
    };
    match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
        Err(_) => return Err(no_answer(0)),
        Ok(Err(e)) => return Err(ProbeFailure::NoSuchHost(e.to_string())),
        Ok(Ok(_)) => {}
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let authority = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    let mut pause = FIRST_PROBE_PAUSE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let reason = match tokio::time::timeout_at(deadline, ask(&client, &authority)).await {
            Err(_) => return Err(no_answer(attempts)),
            Ok(Ok(())) => return Ok(()),
            Ok(Err(Ask::Final(failure))) => return Err(failure),
            Ok(Err(Ask::Again(reason))) => reason,
        };
        if Instant::now() + pause >= deadline {
            return Err(ProbeFailure::Unreachable {
                reason,
                waited: wait,
                attempts,
            });
        }
        if attempts == 1 {
            tracing::info!(
                host = %authority,
                error = %reason,
                wait_secs = wait.as_secs(),
                "the metadata server does not answer yet; asking again (--metadata-wait)"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PROBE_PAUSE);
    }
}

/// One probe's outcome when it is not a metadata server's answer.
enum Ask {
    /// Worth asking again: no connection yet, or a 5xx from a server still starting.
    Again(String),
    Final(ProbeFailure),
}

/// `GET http://HOST/` with `Metadata-Flavor: Google`: a metadata server answers 200 and
/// echoes the header.
async fn ask<C>(client: &Client<C, Empty<Bytes>>, authority: &str) -> Result<(), Ask>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = http::Request::get(format!("http://{authority}/"))
        .header("metadata-flavor", "Google")
        .body(Empty::new())
        .map_err(|e| Ask::Final(ProbeFailure::BadHost(e.to_string())))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| Ask::Again(crate::outbound::chain(&e)))?;
    let flavor = response.headers().get("metadata-flavor");
    let status = response.status();
    if status == http::StatusCode::OK && flavor.is_some_and(|v| v == "Google") {
        Ok(())
    } else if status.is_server_error() {
        Err(Ask::Again(format!("answered {status}")))
    } else {
        Err(Ask::Final(ProbeFailure::NotMetadata(status)))
    }
}

pub(crate) async fn discover(
    explicit: Explicit<'_>,
    env: &Env,
    metadata_wait: Duration,
) -> Result<Found, CredentialError> {
    let mut looked = Vec::new();
    if let Some(found) = find_file(explicit, env, &mut looked) {
        return Ok(found);
    }
    let metadata = env.metadata_host();
    let host = metadata.authority().to_owned();
    let port = metadata.port().unwrap_or(80);
    match probe_metadata(metadata.host(), port, metadata_wait).await {
        Ok(()) => Ok(Found::Metadata { host }),
        Err(why) => {
            looked.push(Looked::MetadataServer { host, why });
            Err(CredentialError::NotFound { looked })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_server;
    fn adc_in(dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(ADC_FILE);
        std::fs::write(&path, "{}").unwrap();
        path
    }

    #[test]
    fn discovery_order() {
        let t = tempfile::tempdir().unwrap();
        let explicit = t.path().join("explicit.json");
        let gac = t.path().join("gac.json");
        let cloudsdk = t.path().join("cloudsdk");
        let cloudsdk_adc = adc_in(&cloudsdk);
        let home = t.path().join("home");
        let home_adc = adc_in(&home.join(".config").join("gcloud"));
        let empty_sdk = t.path().join("empty-sdk");
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        let file = |path: &Path, found_by| {
            Some(Found::File {
                path: path.to_path_buf(),
                found_by,
            })
        };
        let adc = FoundBy::AdcFile;
        let env_origin = Origin::Env("credentials");
        type Case<'a> = (Option<&'a Path>, Vec<(&'a str, String)>, Option<Found>);
        let cases: Vec<Case> = vec![
            (
                Some(&explicit),
                vec![
                    ("GOOGLE_APPLICATION_CREDENTIALS", s(&gac)),
                    ("HOME", s(&home)),
                ],
                file(&explicit, FoundBy::Setting(env_origin.clone())),
            ),
            (
                Some(Path::new("gcloud")),
                vec![("HOME", s(&home))],
                Some(Found::Gcloud(env_origin.clone())),
            ),
            (
                None,
                vec![
                    ("GOOGLE_APPLICATION_CREDENTIALS", s(&gac)),
                    ("CLOUDSDK_CONFIG", s(&cloudsdk)),
                ],
                file(&gac, FoundBy::ApplicationCredentials),
            ),
            (
                None,
                vec![("CLOUDSDK_CONFIG", s(&cloudsdk)), ("HOME", s(&home))],
                file(&cloudsdk_adc, adc.clone()),
            ),
            (None, vec![("HOME", s(&home))], file(&home_adc, adc.clone())),
            // CLOUDSDK_CONFIG replaces ~/.config/gcloud, as in gcloud itself.
            (
                None,
                vec![("CLOUDSDK_CONFIG", s(&empty_sdk)), ("HOME", s(&home))],
                None,
            ),
            (None, vec![("HOME", s(t.path()))], None),
            (None, vec![], None),
        ];
        for (i, (explicit, env, want)) in cases.into_iter().enumerate() {
            let mut looked = Vec::new();
            let explicit = Explicit {
                path: explicit,
                origin: &env_origin,
            };
            let got = find_file(explicit, &Env::from_pairs(env), &mut looked);
            assert_eq!(got, want, "case {i}");
            if got.is_none() {
                assert_eq!(looked.len(), 3, "case {i}: {looked:?}");
                assert!(matches!(looked[0], Looked::CredentialsFlag), "case {i}");
                assert!(
                    matches!(
                        looked[2],
                        Looked::AdcFileAbsent(_) | Looked::NoGcloudConfigDir
                    ),
                    "case {i}: {looked:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn metadata_probe_and_the_nothing_found_message() {
        let addr = test_server::serve(|req| {
            let ok = req
                .headers()
                .get("metadata-flavor")
                .is_some_and(|v| v == "Google");
            let b = http::Response::builder();
            if ok && req.uri().path() == "/" {
                b.header("metadata-flavor", "Google")
                    .body(String::new())
                    .unwrap()
            } else {
                b.status(403).body("no".into()).unwrap()
            }
        })
        .await;
        let unset = Origin::Default;
        let none = Explicit {
            path: None,
            origin: &unset,
        };
        let wait = Duration::from_millis(300);
        let env = Env::from_pairs([("GCE_METADATA_HOST", addr.to_string())]);
        let found = discover(none, &env, wait).await.unwrap();
        assert_eq!(
            found,
            Found::Metadata {
                host: addr.to_string()
            }
        );

        // Something that answers, but is not a metadata server.
        let other = test_server::serve(|_| http::Response::new("hello".into())).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        for host in [other.to_string(), closed_addr.to_string()] {
            let env = Env::from_pairs([
                ("GCE_METADATA_HOST", host.as_str()),
                ("HOME", "/nonexistent-home"),
            ]);
            let err = discover(none, &env, wait).await.unwrap_err();
            let CredentialError::NotFound { looked } = &err else {
                panic!("{err:?}");
            };
            assert!(
                matches!(looked.last(), Some(Looked::MetadataServer { host: h, .. }) if *h == host),
                "{looked:?}"
            );
            let err = err.to_string();
            for needle in [
                "--credentials",
                "GOOGLE_APPLICATION_CREDENTIALS",
                "/nonexistent-home/.config/gcloud/application_default_credentials.json",
                host.as_str(),
                "gcloud auth application-default login",
                "gcloud iam service-accounts keys create",
                "Google Cloud",
            ] {
                assert!(err.contains(needle), "{needle} missing:\n{err}");
            }
        }
    }

    /// A metadata server that is still starting (5xx, or no listener yet) is asked again,
    /// with backoff, until it answers or the wait ends.
    #[tokio::test]
    async fn metadata_probe_waits_for_a_starting_server() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let addr = test_server::serve(move |_| {
            let b = http::Response::builder();
            if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                b.status(503).body("starting".into()).unwrap()
            } else {
                b.header("metadata-flavor", "Google")
                    .body(String::new())
                    .unwrap()
            }
        })
        .await;
        let wait = Duration::from_secs(10);
        probe_metadata("127.0.0.1", addr.port(), wait)
            .await
            .unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 3);

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = probe_metadata("127.0.0.1", port, Duration::from_millis(500))
            .await
            .unwrap_err();
        let ProbeFailure::Unreachable { attempts, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(*attempts >= 2, "{err}");
        assert!(err.to_string().contains("--metadata-wait"), "{err}");
    }
}

//! Which credential to use, found the way Google's libraries find it (Application Default
//! Credentials): `--credentials`, `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file,
//! then the metadata server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::error::{CredentialError, Looked, ProbeFailure};
use crate::config::Env;

/// `--credentials gcloud` means the gcloud CLI; write `./gcloud` for a file of that name.
pub(crate) const GCLOUD: &str = "gcloud";
const ADC_FILE: &str = "application_default_credentials.json";
/// Off Google Cloud the probe is pure waiting, so keep it short.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    File { path: PathBuf, origin: &'static str },
    Gcloud,
    Metadata { host: String },
}

/// The credential files to try, in order, and what was looked at on the way.
pub(crate) fn find_file(
    explicit: Option<&Path>,
    env: &Env,
    looked: &mut Vec<Looked>,
) -> Option<Found> {
    if let Some(path) = explicit {
        if path == Path::new(GCLOUD) {
            return Some(Found::Gcloud);
        }
        return Some(Found::File {
            path: path.to_path_buf(),
            origin: "--credentials",
        });
    }
    looked.push(Looked::CredentialsFlag);
    if let Some(path) = env.get("GOOGLE_APPLICATION_CREDENTIALS") {
        // Named explicitly: a missing file is an error, not a reason to look further.
        return Some(Found::File {
            path: PathBuf::from(path),
            origin: "GOOGLE_APPLICATION_CREDENTIALS",
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
                origin: "gcloud's application default credentials",
            });
        }
        Some(path) => looked.push(Looked::AdcFileAbsent(path)),
        None => looked.push(Looked::NoGcloudConfigDir),
    }
    None
}

/// `GET http://HOST/` with `Metadata-Flavor: Google`: a metadata server answers 200 and
/// echoes the header. Err is why not, for the "looked at" list.
pub(crate) async fn probe_metadata(host: &str) -> Result<(), ProbeFailure> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("http://{host}/"))
        .header("metadata-flavor", "Google")
        .body(Empty::new())
        .map_err(|e| ProbeFailure::BadHost(e.to_string()))?;
    let response = tokio::time::timeout(PROBE_TIMEOUT, client.request(request))
        .await
        .map_err(|_| ProbeFailure::NoAnswer(PROBE_TIMEOUT))?
        .map_err(|e| ProbeFailure::Unreachable(e.to_string()))?;
    let flavor = response.headers().get("metadata-flavor");
    if response.status() == http::StatusCode::OK && flavor.is_some_and(|v| v == "Google") {
        Ok(())
    } else {
        Err(ProbeFailure::NotMetadata(response.status()))
    }
}

pub(crate) async fn discover(explicit: Option<&Path>, env: &Env) -> Result<Found, CredentialError> {
    let mut looked = Vec::new();
    if let Some(found) = find_file(explicit, env, &mut looked) {
        return Ok(found);
    }
    let host = env.metadata_host().authority().to_owned();
    match probe_metadata(&host).await {
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
        let file = |path: &Path, origin| {
            Some(Found::File {
                path: path.to_path_buf(),
                origin,
            })
        };
        let adc = "gcloud's application default credentials";
        type Case<'a> = (Option<&'a Path>, Vec<(&'a str, String)>, Option<Found>);
        let cases: Vec<Case> = vec![
            (
                Some(&explicit),
                vec![
                    ("GOOGLE_APPLICATION_CREDENTIALS", s(&gac)),
                    ("HOME", s(&home)),
                ],
                file(&explicit, "--credentials"),
            ),
            (
                Some(Path::new("gcloud")),
                vec![("HOME", s(&home))],
                Some(Found::Gcloud),
            ),
            (
                None,
                vec![
                    ("GOOGLE_APPLICATION_CREDENTIALS", s(&gac)),
                    ("CLOUDSDK_CONFIG", s(&cloudsdk)),
                ],
                file(&gac, "GOOGLE_APPLICATION_CREDENTIALS"),
            ),
            (
                None,
                vec![("CLOUDSDK_CONFIG", s(&cloudsdk)), ("HOME", s(&home))],
                file(&cloudsdk_adc, adc),
            ),
            (None, vec![("HOME", s(&home))], file(&home_adc, adc)),
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
        let env = Env::from_pairs([("GCE_METADATA_HOST", addr.to_string())]);
        let found = discover(None, &env).await.unwrap();
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
            let err = discover(None, &env).await.unwrap_err();
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
}

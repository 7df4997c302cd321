//! One fake Google, one checking TLS upstream, one key file: the usual test world.

use std::path::PathBuf;

use iap_proxy::config::{Env, Settings};
use url::Url;

use super::{Alpn, FakeGoogle, TestDir, Upstream, UpstreamOptions};

pub const AUDIENCE: &str = "123456789-fakeiapclient.apps.googleusercontent.com";
pub const SA_EMAIL: &str = "proxy-test@fake-project.iam.gserviceaccount.com";

pub struct World {
    pub google: FakeGoogle,
    pub upstream: Upstream,
    pub dir: TestDir,
    pub key_file: PathBuf,
}

impl World {
    pub async fn new() -> World {
        World::with_alpn(Alpn::Both).await
    }

    pub async fn with_alpn(alpn: Alpn) -> World {
        let google = FakeGoogle::start().await;
        let upstream = Upstream::start(UpstreamOptions {
            google_key: google.decoding_key(),
            audience: AUDIENCE.to_string(),
            alpn,
        })
        .await;
        let dir = TestDir::new("world");
        let key_file = google.service_account_key_file(dir.path(), SA_EMAIL);
        World {
            google,
            upstream,
            dir,
            key_file,
        }
    }

    /// Settings for a proxy using the key file and trusting the test CA.
    pub fn settings(&self) -> Settings {
        let mut s = Settings::new(Url::parse(&self.upstream.url()).unwrap(), AUDIENCE);
        s.credentials = Some(self.key_file.clone());
        s.upstream_ca = Some(self.upstream.ca_path().to_path_buf());
        s
    }

    /// An environment with nothing from the test process in it.
    pub fn env(&self) -> Env {
        Env::default()
    }
}

//! The usual test world (one fake Google, one checking TLS upstream, one key file), and the
//! files tests hand to the proxy: temp dirs, JSON files, scripts, ADC files, a fake `gcloud`.

use std::path::{Path, PathBuf};

use iap_proxy::config::{Env, Settings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::fake_google::FakeGoogle;
use super::fake_iam::User;
use super::upstream::{Alpn, Upstream, UpstreamOptions};

pub const AUDIENCE: &str = "123456789-fakeiapclient.apps.googleusercontent.com";
pub const SA_EMAIL: &str = "proxy-test@fake-project.iam.gserviceaccount.com";

/// The `gcloud auth application-default login` user, with gcloud's own OAuth client.
pub const USER_EMAIL: &str = "dev@example.com";
pub const USER_CLIENT: &str =
    "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com";
pub const USER_SECRET: &str = "d-FL95Q19q7MQmFpd7hHD0Ty";
pub const USER_REFRESH_TOKEN: &str = "1//0refresh-token-of-dev";

/// A unique temp dir, removed with everything in it when dropped.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("iap-proxy-test-")
        .tempdir()
        .expect("create a temp dir")
}

/// Writes `contents` to `dir/name`; returns the path.
pub fn write_file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path
}

/// Writes `v` as pretty JSON to `dir/name`; returns the path.
pub fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    write_file(dir, name, serde_json::to_vec_pretty(v).unwrap())
}

/// Writes an executable `/bin/sh` script `dir/name` running `body`; returns the path.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = write_file(dir, name, format!("#!/bin/sh\n{body}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Makes `dir/home` a home directory whose gcloud ADC file holds `adc`; returns the home.
pub fn home_with_adc(dir: &Path, adc: &Value) -> PathBuf {
    let home = dir.join("home");
    let gcloud = home.join(".config/gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    write_json(&gcloud, "application_default_credentials.json", adc);
    home
}

/// Signs `claims` with the private key of a service-account key file (RS256, `kid` = the
/// file's `private_key_id`), as the service account itself would.
pub fn sign_as_service_account(key_file: &Value, claims: &Value) -> String {
    let pem = key_file["private_key"].as_str().expect("private_key");
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA private key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = key_file["private_key_id"].as_str().map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("sign JWT")
}

pub struct World {
    pub google: FakeGoogle,
    pub upstream: Upstream,
    pub dir: TempDir,
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
        let dir = temp_dir();
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
        let upstream = self.upstream.url();
        let args = [
            "--upstream",
            upstream.as_str(),
            "--audience",
            AUDIENCE,
            "--credentials",
            self.key_file.to_str().expect("UTF-8 temp path"),
            "--upstream-ca",
            self.upstream.ca_path().to_str().expect("UTF-8 temp path"),
        ];
        Settings::from_args(&args, &Env::default()).expect("the test settings are valid")
    }

    /// An environment with nothing from the test process in it.
    pub fn env(&self) -> Env {
        Env::default()
    }

    /// The key file's JSON.
    pub fn key_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.key_file).unwrap()).unwrap()
    }

    /// Path of `name` in the world's temp dir (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        write_file(self.dir.path(), name, contents)
    }

    pub fn write_json(&self, name: &str, v: &Value) -> PathBuf {
        write_json(self.dir.path(), name, v)
    }

    /// Registers the ADC user (`USER_*`) with the fake Google under OAuth client
    /// `client_id`, and returns their `authorized_user` credentials file as JSON.
    pub fn authorized_user(&self, client_id: &str) -> Value {
        self.google.register_user(User {
            client_id: client_id.into(),
            client_secret: USER_SECRET.into(),
            refresh_token: USER_REFRESH_TOKEN.into(),
            email: USER_EMAIL.into(),
        });
        json!({
            "type": "authorized_user",
            "client_id": client_id,
            "client_secret": USER_SECRET,
            "refresh_token": USER_REFRESH_TOKEN,
            "token_uri": self.google.token_uri(),
            "quota_project_id": "fake-project",
        })
    }

    /// `authorized_user` written as `adc.json`; returns its path.
    pub fn authorized_user_file(&self, client_id: &str) -> PathBuf {
        self.write_json("adc.json", &self.authorized_user(client_id))
    }
}

/// A `gcloud` script alone in a directory of its own (put that on PATH with `env()`), which
/// records the arguments of every call for the test to assert on.
pub struct FakeGcloud {
    bin: TempDir,
}

impl FakeGcloud {
    /// Prints `output` whatever it is asked.
    pub fn printing(output: &str) -> FakeGcloud {
        FakeGcloud::with_body(&format!("echo '{output}'\n"))
    }

    /// Answers `gcloud auth print-identity-token --audiences=AUDIENCE` with `token`, and
    /// anything else (such as an extra flag) with the error gcloud gives a user account.
    pub fn identity_token(audience: &str, token: &str) -> FakeGcloud {
        FakeGcloud::with_body(&format!(
            "if [ \"$1 $2 $3\" = 'auth print-identity-token --audiences={audience}' ] && [ $# -eq 3 ]; then\n\
               echo '{token}'\n\
             else\n\
               echo \"ERROR: (gcloud.auth.print-identity-token) Invalid account type for --audiences. Requires valid service account.\" >&2\n\
               exit 1\n\
             fi\n"
        ))
    }

    fn with_body(body: &str) -> FakeGcloud {
        let bin = temp_dir();
        let calls = bin.path().join("calls");
        let record = format!("printf '%s\\n' \"$*\" >> '{}'\n", calls.display());
        write_script(bin.path(), "gcloud", &format!("{record}{body}"));
        FakeGcloud { bin }
    }

    /// PATH holding only this `gcloud`.
    pub fn env(&self) -> Env {
        Env::from_pairs([("PATH", self.bin.path().to_str().unwrap())])
    }

    /// The arguments of each call so far, space-separated, one entry per call.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

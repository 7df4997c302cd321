//! A real nginx (Debian's) as a TLS HTTP/1.1 + HTTP/2 front end on 127.0.0.1, the way
//! Google's and most front ends rotate connections: `keepalive_requests 100` ends each
//! connection after 100 requests (GOAWAY on HTTP/2, `Connection: close` on HTTP/1.1).
//! It answers a static 200 itself. Stopped (SIGTERM to its master, by pid) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use super::tls::TestCa;

pub struct Nginx {
    child: Child,
    port: u16,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The nginx binary: on PATH, or where Debian puts it.
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    let found = on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nginx");
        debian.is_file().then_some(debian)
    });
    found.unwrap_or_else(|| {
        panic!(
            "nginx is not installed: these tests need Debian's nginx as a real front end. \
             .ci/run installs it (apt-get install nginx); install it the same way to run them"
        )
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl Nginx {
    /// Starts nginx with `keepalive_requests` per connection, and waits (bounded) until it
    /// accepts connections.
    pub fn start(keepalive_requests: u32) -> Nginx {
        let nginx = binary();
        let dir = super::fixture::temp_dir();
        let d = dir.path();
        let ca = TestCa::new();
        let ca_path = ca.write_ca(d);
        let (chain, key) = ca.leaf();
        let chain_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        std::fs::write(d.join("leaf.pem"), chain_pem).unwrap();
        std::fs::write(d.join("leaf.key"), pem("PRIVATE KEY", key.secret_der())).unwrap();
        let port = super::closed_port();
        let user = if is_root() { "user root;" } else { "" };
        let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|t| format!("  {t}_temp_path {};\n", d.join(t).display()))
            .collect();
        let conf = format!(
            "{user}\ndaemon off;\nworker_processes 1;\npid {pid};\nerror_log stderr warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n{temp}  keepalive_requests {keepalive_requests};\n\
               keepalive_timeout 60s;\n\
               server {{\n    listen 127.0.0.1:{port} ssl http2;\n\
                 ssl_certificate {dir}/leaf.pem;\n    ssl_certificate_key {dir}/leaf.key;\n\
                 location / {{ default_type text/plain; return 200 \"nginx ok\\n\"; }}\n  }}\n}}\n",
            pid = d.join("nginx.pid").display(),
            dir = d.display(),
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg("stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            port,
            ca_path,
            _dir: dir,
        };
        nginx.wait_listening();
        nginx
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited at start-up ({status}); its stderr is above");
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master (ours, by pid): it stops its worker and exits.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

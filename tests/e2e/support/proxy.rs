//! The proxy under test: in-process on 127.0.0.1:0, or the real binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iap_proxy::config::{Env, Settings};
use iap_proxy::{Drain, StartError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct InProcess {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Drain, StartError>>,
}

impl InProcess {
    /// Starts the proxy; it serves once start-up (discovery, credentials) is done, and
    /// connections made before then wait in the listen queue.
    pub async fn start(settings: Settings, env: Env) -> InProcess {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(iap_proxy::run(listener, settings, env, async {
            let _ = rx.await;
        }));
        InProcess {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    /// Serves on listeners the test bound itself (several routes, an admin listener).
    pub fn start_listeners(
        listeners: iap_proxy::Listeners,
        settings: Settings,
        env: Env,
    ) -> InProcess {
        let addr = match listeners.routes.first().and_then(|l| l.local_addr().ok()) {
            Some(iap_proxy::listener::ListenAddr::Tcp(addr)) => addr,
            _ => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(iap_proxy::serve(listeners, settings, env, async {
            let _ = rx.await;
        }));
        InProcess {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    /// Waits (bounded) for the proxy to stop by itself, e.g. after /quitquitquit.
    pub async fn stopped_within(mut self, within: Duration) -> Drain {
        match tokio::time::timeout(within, &mut self.task).await {
            Ok(joined) => joined.expect("join").expect("proxy ran"),
            Err(_) => panic!("proxy still running after {within:?}"),
        }
    }

    /// Sends the shutdown signal without waiting for the drain.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Starts a proxy that must refuse to start, and returns why (bounded wait).
    pub async fn start_error(settings: Settings, env: Env) -> StartError {
        let mut proxy = InProcess::start(settings, env).await;
        match tokio::time::timeout(Duration::from_secs(15), &mut proxy.task).await {
            Ok(Ok(Err(err))) => err,
            Ok(Ok(Ok(drain))) => panic!("proxy stopped without an error: {drain:?}"),
            Ok(Err(join)) => panic!("proxy task panicked: {join}"),
            Err(_) => panic!("proxy started although it should have refused to"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks for a graceful shutdown and waits for the drain to end.
    pub async fn stop(mut self) -> Drain {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("join").expect("proxy ran")
    }
}

/// The real `iap-proxy` binary, with its stderr captured line by line.
pub struct Binary {
    pub child: Child,
    pub addr: Option<SocketAddr>,
    pub output: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

pub fn binary_path() -> &'static str {
    env!("CARGO_BIN_EXE_iap-proxy")
}

impl Binary {
    /// Spawns the binary with exactly `env` as its environment (plus PATH), and waits for
    /// its "listening" line when `wait_listening` is set.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], wait_listening: bool) -> Binary {
        let mut cmd = Command::new(binary_path());
        cmd.args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn iap-proxy");
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let err = child.stderr.take().expect("stderr");
        let out = child.stdout.take().expect("stdout");
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = tx.send(addr);
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        {
            let stdout = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    stdout.lock().unwrap().push(line);
                }
            });
        }
        let addr = if wait_listening {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(addr) => Some(addr),
                Err(_) => panic!(
                    "iap-proxy did not start listening; stderr:\n{}",
                    output.lock().unwrap().join("\n")
                ),
            }
        } else {
            None
        };
        Binary {
            child,
            addr,
            output,
            stdout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr.expect("listening"), path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal with the `kill` command (no unsafe code in tests either).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "iap-proxy did not exit within {within:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded, off the async runtime) for the exit code.
    pub async fn terminate(mut self) -> (Option<i32>, Binary) {
        self.signal("TERM");
        tokio::task::spawn_blocking(move || {
            let code = self.wait_exit(Duration::from_secs(10));
            (code, self)
        })
        .await
        .expect("wait for exit")
    }

    pub fn stderr(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Peak resident memory (VmHWM) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in /proc status")
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("iap-proxy listening") {
        return None;
    }
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        return v["listen"].as_str()?.parse().ok();
    }
    let rest = line.split("listen=").nth(1)?;
    rest.split_whitespace()
        .next()?
        .trim_matches('"')
        .parse()
        .ok()
}

//! The proxy under test: in-process on 127.0.0.1:0, or the real binary as a child process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iap_proxy::config::{Env, Settings};
use iap_proxy::{Drain, StartError};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
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

/// The real `iap-proxy` binary as a child process, its stdout and stderr captured line by
/// line. Killed when dropped.
pub struct Binary {
    child: Child,
    pid: u32,
    addr: Option<SocketAddr>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    /// Lines read from stderr so far: changes with each line, closes at end-of-file.
    stderr_count: watch::Receiver<usize>,
    /// The two pipe readers; each ends at end-of-file, once the process has exited.
    readers: Vec<JoinHandle<()>>,
}

pub fn binary_path() -> &'static str {
    env!("CARGO_BIN_EXE_iap-proxy")
}

impl Binary {
    /// Spawns the binary with exactly `env` as its environment (plus PATH). Must run inside
    /// a tokio runtime (the pipes are read by tasks, the exit is awaited).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn_inner(args, env, None).0
    }

    /// Spawns the binary and waits (bounded) for its "listening" line.
    pub async fn spawn_listening(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::listening(Binary::spawn_inner(args, env, None)).await
    }

    /// Like [`Binary::spawn_listening`], with the process's umask set to `umask` (octal).
    pub async fn spawn_listening_with_umask(
        umask: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Binary {
        Binary::listening(Binary::spawn_inner(args, env, Some(umask))).await
    }

    async fn listening((mut binary, listening): (Binary, oneshot::Receiver<SocketAddr>)) -> Binary {
        match tokio::time::timeout(Duration::from_secs(20), listening).await {
            Ok(Ok(addr)) => binary.addr = Some(addr),
            // The reader dropped the sender: stderr ended without the line.
            Ok(Err(_)) => {
                let code = binary.wait_exit(Duration::from_secs(10)).await;
                panic!(
                    "iap-proxy exited ({code:?}) without listening; stderr:\n{}",
                    binary.stderr()
                )
            }
            Err(_) => panic!(
                "iap-proxy did not start listening within 20 s; stderr:\n{}",
                binary.stderr()
            ),
        }
        binary
    }

    fn spawn_inner(
        args: &[&str],
        env: &[(&str, &str)],
        umask: Option<&str>,
    ) -> (Binary, oneshot::Receiver<SocketAddr>) {
        let mut cmd = match umask {
            // The shell sets the umask, then becomes the proxy (exec): the pid stays its own.
            Some(mask) => {
                let mut sh = Command::new("sh");
                let script = format!("umask {mask} && exec \"$0\" \"$@\"");
                sh.args(["-c", script.as_str(), binary_path()]);
                sh
            }
            None => Command::new(binary_path()),
        };
        cmd.args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn iap-proxy");
        let pid = child.id().expect("a running child has a pid");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, listening) = oneshot::channel::<SocketAddr>();
        let mut tx = Some(tx);
        let (count_tx, stderr_count) = watch::channel(0usize);
        let readers = vec![
            read_lines(
                child.stderr.take().expect("stderr"),
                stderr.clone(),
                move |line| {
                    if let Some(addr) = listening_addr(line) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                },
                Some(count_tx),
            ),
            read_lines(
                child.stdout.take().expect("stdout"),
                stdout.clone(),
                |_| {},
                None,
            ),
        ];
        let binary = Binary {
            child,
            pid,
            addr: None,
            stderr,
            stdout,
            stderr_count,
            readers,
        };
        (binary, listening)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr.expect("listening"), path)
    }

    /// Sends a signal with the `kill` command (no unsafe code in tests either).
    pub async fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    /// Waits (bounded) for the process to exit and for its output to be read to the end;
    /// returns the exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for iap-proxy"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "iap-proxy did not exit within {within:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        };
        // The pipes reach end-of-file when the process is gone; join the readers so that
        // every line it wrote is in `stderr()`/`stdout()`.
        for reader in self.readers.drain(..) {
            tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("output pipes still open after exit: held by a child of iap-proxy?")
                .expect("pipe reader");
        }
        status.code()
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub async fn terminate(mut self) -> (Option<i32>, Binary) {
        self.signal("TERM").await;
        let code = self.wait_exit(Duration::from_secs(10)).await;
        (code, self)
    }

    /// Waits (bounded) until `n` stderr lines satisfy `matches`, and returns those lines;
    /// woken by each line read, not by polling.
    pub async fn wait_for_stderr(
        &self,
        n: usize,
        within: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut count = self.stderr_count.clone();
        let found = |lines: &Mutex<Vec<String>>| -> Vec<String> {
            let lines = lines.lock().unwrap();
            lines.iter().filter(|l| matches(l)).cloned().collect()
        };
        let waited = tokio::time::timeout(within, async {
            loop {
                let now = found(&self.stderr);
                if now.len() >= n {
                    return Some(now);
                }
                if count.changed().await.is_err() {
                    return None; // stderr ended
                }
            }
        })
        .await;
        match waited {
            Ok(Some(lines)) => lines,
            _ => panic!(
                "fewer than {n} matching stderr line(s) within {within:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Waits (bounded) until a stderr line contains `needle`; returns the first such line.
    pub async fn wait_for_stderr_line(&self, needle: &str, within: Duration) -> String {
        let lines = self
            .wait_for_stderr(1, within, |l| l.contains(needle))
            .await;
        lines.into_iter().next().expect("at least one line")
    }

    /// `http://ADDR{path}` on the admin listener (`--admin-listen 127.0.0.1:0`), read off
    /// its log line.
    pub async fn admin_url(&self, path: &str) -> String {
        let line = self
            .wait_for_stderr_line("admin endpoints listening", Duration::from_secs(10))
            .await;
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|a| a.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("no addr= in {line}"));
        format!("http://{addr}{path}")
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Peak resident memory (VmHWM) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmRSS:")
    }
}

/// Collects the lines of `pipe` into `into`, showing each to `seen` once stored.
fn read_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    mut seen: impl FnMut(&str) + Send + 'static,
    count: Option<watch::Sender<usize>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // Stored first, so whoever `seen` or `count` tells finds the line there.
            into.lock().unwrap().push(line.clone());
            seen(&line);
            if let Some(count) = &count {
                count.send_modify(|n| *n += 1);
            }
        }
    })
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

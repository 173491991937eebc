//! Services that durability tests and benchmarks own: a Mosquitto of their own
//! (persistence on, queue unbounded, restartable) and a TCP proxy in front of
//! PostgreSQL that can cut every connection, to play a database outage. Not used by
//! the service itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, up: bool, timeout: Duration) {
    let started = Instant::now();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() != up {
        assert!(
            started.elapsed() < timeout,
            "port {port} did not become {} within {timeout:?}",
            if up { "reachable" } else { "free" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mosquitto_binary() -> Option<&'static str> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

/// A Mosquitto process of the test's own.
pub struct OwnMosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnMosquitto {
    /// Starts one open to anonymous clients; an error when Mosquitto is not installed.
    pub fn start() -> Result<OwnMosquitto, String> {
        Self::start_with(|_| "allow_anonymous true\n".to_owned())
    }

    /// Starts one whose access lines (`allow_anonymous`, `password_file`, `acl_file`,
    /// ...) are what `access` returns for the broker's own directory, where the files
    /// it names can be written before the start.
    pub fn start_with(access: impl FnOnce(&Path) -> String) -> Result<OwnMosquitto, String> {
        let bin = mosquitto_binary().ok_or("mosquitto is not installed")?;
        let dir = std::env::temp_dir().join(format!(
            "lw-mosq-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let access = access(&dir);
        let port = free_port();
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\n{access}user root\npersistence true\n\
                 persistence_location {}/\nautosave_interval 1\nmax_queued_messages 0\n\
                 max_inflight_messages 1000\nlog_dest file {}/mosquitto.log\nlog_type all\n",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        let mut m = OwnMosquitto {
            port,
            dir,
            child: None,
        };
        m.spawn(bin);
        Ok(m)
    }

    fn spawn(&mut self, bin: &str) {
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        wait_listening(self.port, true, Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's own directory (its configuration, files and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes it re-read its password file and ACL (SIGHUP), as an operator does.
    pub fn reload(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg("-HUP")
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Stops it cleanly (it saves its sessions and queues) and starts it again on the
    /// same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops it cleanly (it saves its sessions and queues).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
        wait_listening(self.port, false, Duration::from_secs(10));
    }

    /// Starts it again after [`OwnMosquitto::stop`], on the same port.
    pub fn start_again(&mut self) {
        self.spawn(mosquitto_binary().expect("mosquitto was there a moment ago"));
    }
}

impl Drop for OwnMosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("LEAKWATCH_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A TCP proxy to `upstream` that can cut all its connections and refuse new ones.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            port,
            open,
            conns,
            accept,
        }
    }

    /// The database is gone: every connection drops, new ones are refused.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// The database is back.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

//! A three-node nats-server cluster of a test's own: its own ports (found free), its
//! own store directories, each node a separate process that a test can SIGKILL,
//! SIGSTOP or restart by PID. Only built with the `testkit` feature.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where nats-server is (the Debian package installs /usr/sbin/nats-server).
pub fn nats_server_binary() -> Option<&'static str> {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node.
pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub conf: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// The cluster; dropping it kills every node and removes its directory.
pub struct NatsCluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    bin: &'static str,
}

impl NatsCluster {
    /// Starts `n` clustered nodes and waits until each accepts clients.
    pub fn start(n: usize) -> Result<NatsCluster, String> {
        let bin = nats_server_binary().ok_or("nats-server is not installed")?;
        let dir = std::env::temp_dir().join(format!(
            "lw-nats-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, cluster)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let conf = dir.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: lwtest\n listen: 127.0.0.1:{cluster}\n routes: [{}] }}\n",
                    dir.join(&name).display(),
                    routes.join(", ")
                ),
            )
            .map_err(|e| e.to_string())?;
            nodes.push(Node {
                name,
                client_port: *client,
                cluster_port: *cluster,
                conf,
                child: None,
            });
        }
        let mut c = NatsCluster { dir, nodes, bin };
        for i in 0..n {
            c.start_node(i);
        }
        for i in 0..n {
            c.wait_up(i, Duration::from_secs(20));
        }
        Ok(c)
    }

    /// `nats://...` of every node, comma-separated (what clients connect to).
    pub fn servers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start_node(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("{}.log", self.nodes[i].name)))
            .expect("node log");
        let child = Command::new(self.bin)
            .arg("-c")
            .arg(&self.nodes[i].conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.nodes[i].child = Some(child);
    }

    pub fn wait_up(&self, i: usize, timeout: Duration) {
        let started = Instant::now();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.nodes[i].client_port));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(
                started.elapsed() < timeout,
                "nats node {i} not up in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL of node `i` (by its PID).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on the same ports and store.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.start_node(i);
        self.wait_up(i, Duration::from_secs(20));
    }

    /// SIGTERM to node `i`, waiting for it to exit.
    pub fn terminate(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// The index of the node named `name` (`n0`, ...).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

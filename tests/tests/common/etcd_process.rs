//! An etcd started with flags the harness does not offer (`coord::testing` fixes its flags and
//! clears `ETCD_*` variables): one member on free loopback ports, killed and removed on drop.

use std::process::Stdio;
use std::time::Duration;

use coord::{ClientConfig, Coord};
use tempfile::TempDir;
use tokio::process::{Child, Command};

pub struct EtcdProcess {
    _child: Child,
    dir: TempDir,
    endpoint: String,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

impl EtcdProcess {
    /// Starts `etcd` with the usual single-member flags plus `extra`, and waits until it
    /// answers with a leader.
    pub async fn start(extra: &[&str]) -> EtcdProcess {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
        let mut command = Command::new("etcd");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        command
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the log file"))
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .expect("start etcd (install etcd-server, or put `etcd` on PATH)");
        let etcd = EtcdProcess {
            _child: child,
            dir,
            endpoint,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(coord) = Coord::connect(etcd.client_config()).await {
                if coord.store().status().await.is_ok_and(|s| s.leader != 0) {
                    return etcd;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not come up; its log:\n{}",
                std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The test profile's `ClientConfig` for this server.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::for_env("test").with_endpoints([self.endpoint.as_str()])
    }
}

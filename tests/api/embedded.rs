//! The service as a newcomer runs it: no configuration, its own private PostgreSQL.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

/// A directory under target/tmp: the embedded server's user must be able to reach it.
fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("e2e")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn syncbridge_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncbridge"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("SYNCBRIDGE_ENV")
        .env("PORT", "0")
        .env("RUST_LOG", "info");
    cmd
}

/// A running service; dropping it (also when a test fails) stops it as an operator would.
struct Service {
    child: Option<Child>,
    addr: String,
    logs: mpsc::Receiver<String>,
}

impl Service {
    /// Sends SIGTERM and waits for the exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// Starts `syncbridge` and returns it once it says where it listens.
fn start_service(dir: &Path) -> Service {
    let mut child = syncbridge_in(dir, &[])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let mut service = Service {
        child: Some(child),
        addr: String::new(),
        logs: rx,
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = service
            .logs
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!("no 'listening' line within 60 s; saw:\n{}", seen.join("\n"))
            });
        if let Some(pos) = line.find("listening on http://") {
            service.addr = line[pos + "listening on http://".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            return service;
        }
        seen.push(line);
    }
}

fn server_is_running(data_dir: &Path) -> bool {
    data_dir.join("postmaster.pid").exists()
}

#[tokio::test]
async fn with_no_configuration_the_service_starts_its_own_database_and_stops_it_on_sigterm() {
    let dir = scratch_dir();
    let data_dir: PathBuf = dir.path().join(".syncbridge/postgres");

    let mut service = start_service(dir.path());
    let ready = reqwest::get(format!("http://{}/readyz", service.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    assert!(
        server_is_running(&data_dir),
        "the private PostgreSQL runs in ./.syncbridge/postgres"
    );
    // Listening on the socket only: the configuration has no TCP address.
    let conf = std::fs::read_to_string(data_dir.join("postgresql.conf")).unwrap();
    assert!(conf.contains("listen_addresses = ''"));

    // An admin command beside the running service shares its database.
    let out = syncbridge_in(dir.path(), &["tenants", "create", "Persisted"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server_is_running(&data_dir),
        "the admin command must not stop the service's database"
    );

    let status = service.stop();
    assert!(status.success(), "exit status {status}");
    assert!(
        !server_is_running(&data_dir),
        "the private PostgreSQL is stopped with the service"
    );

    // A second start reuses the data.
    let mut service = start_service(dir.path());
    let out = syncbridge_in(dir.path(), &["tenants", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Persisted"));
    assert!(service.stop().success());
    assert!(!server_is_running(&data_dir));
}

#[tokio::test]
async fn a_bad_configuration_key_stops_the_start_naming_the_key() {
    let dir = scratch_dir();
    let out = syncbridge_in(dir.path(), &["migrate"])
        .env("SYNCBRIDGE__HTTP__PROT", "80")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prot"), "{stderr}");
    assert!(
        !dir.path().join(".syncbridge").exists(),
        "nothing may start before the config is valid"
    );
}

/// An operator's command run where no private database exists says that it made a new, empty
/// one (it would otherwise list nothing, truthfully, about the wrong database); run again there,
/// it no longer says so.
#[tokio::test]
async fn a_command_that_makes_a_new_private_database_says_so() {
    let dir = scratch_dir();
    let out = syncbridge_in(dir.path(), &["tenants", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a new, empty one was created"), "{stderr}");
    assert!(stderr.contains(".syncbridge/postgres"), "{stderr}");
    let again = syncbridge_in(dir.path(), &["tenants", "list"])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("new, empty"));
    assert!(!server_is_running(&dir.path().join(".syncbridge/postgres")));
}

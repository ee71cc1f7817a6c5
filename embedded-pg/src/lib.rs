//! The private PostgreSQL that syncbridge starts when no `DATABASE_URL` is given.
//!
//! It finds `initdb`/`pg_ctl`, initialises a cluster in the data directory on first use, starts it
//! listening only on a unix socket inside that directory (no TCP port, nothing to collide with),
//! creates the database and stops the server when the last syncbridge process using it exits.
//!
//! PostgreSQL refuses to run as root, and these machines run everything as root: in that case the
//! server runs as an unprivileged system user (`database.embedded.run_as`, default `postgres`,
//! falling back to `nobody`) through the standard library's `CommandExt::uid/gid`, which also drops
//! supplementary groups. The socket directory is the data directory (mode 0700, owned by that
//! user), so only that user and root can connect, and local `trust` authentication is safe.
//!
//! Several processes (e.g. `syncbridge web` and `syncbridge worker` in two terminals) may share one
//! data directory: each holds a shared lock on `<data_dir>.lock` while it uses the server, and
//! starting or stopping is done under an exclusive `<data_dir>.setup` lock. A process that on exit
//! can take `<data_dir>.lock` exclusively is the last user, and stops the
//! server. No crate fit this (the embedded-postgres crates download binaries, which these machines
//! cannot), so it is written here over `initdb` and `pg_ctl`.

use std::{
    fs::{self, File},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{Context, Result, bail};
use sqlx::{
    Connection, Executor, PgConnection,
    postgres::{PgConnectOptions, PgSslMode},
};

/// The superuser name given to `initdb`, independent of the OS user that runs the server.
const SUPERUSER: &str = "postgres";
/// Only used to name the socket file; no TCP port is opened.
const SOCKET_PORT: u16 = 5432;
/// Unix socket paths are limited to 107 bytes on Linux.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    /// `None`: search `PATH`, then `/usr/lib/postgresql/<version>/bin`.
    pub bin_dir: Option<PathBuf>,
    /// The OS user the server runs as when this process is root.
    pub run_as: String,
    pub database: String,
    /// `false` turns off fsync and friends: for throw-away test clusters only.
    pub durable: bool,
}

/// A running private PostgreSQL that this process uses.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    pg_ctl: PathBuf,
    server_user: Option<OsUser>,
    database: String,
    setup_lock_path: PathBuf,
    usage: Option<File>,
}

#[derive(Debug, Clone)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Initialises (first time), starts (unless already running) and creates the database.
    /// Blocking: call it from `spawn_blocking` inside async code.
    pub fn start(options: &EmbeddedOptions) -> Result<Self> {
        let bins = find_binaries(options.bin_dir.as_deref(), &default_search_dirs())?;
        let data_dir = absolute(&options.data_dir)?;
        check_data_dir_path(&data_dir)?;
        let parent = data_dir
            .parent()
            .context("the embedded data directory has no parent directory")?;
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;

        // Setup (and stop) hold the setup lock exclusively; every user holds the usage lock shared.
        let setup = open_lock(&lock_path(&data_dir, "setup"))?;
        setup
            .lock()
            .context("cannot take the embedded setup lock")?;
        let usage = open_lock(&lock_path(&data_dir, "lock"))?;

        let server_user = if nix::unistd::geteuid().is_root() {
            Some(resolve_server_user(&options.run_as)?)
        } else {
            None
        };
        let mut this = Self {
            data_dir: data_dir.clone(),
            pg_ctl: bins.pg_ctl,
            server_user,
            database: options.database.clone(),
            setup_lock_path: lock_path(&data_dir, "setup"),
            usage: None,
        };

        if !this.data_dir.join("PG_VERSION").is_file() {
            this.init(&bins.initdb, options.durable)?;
        }
        if !this.is_running()? {
            this.start_server()?;
        }
        // Only a stopping process takes the usage lock exclusively, and it holds the setup lock
        // while it does, so this cannot wait.
        usage
            .lock_shared()
            .context("cannot take the embedded usage lock")?;
        this.usage = Some(usage);
        setup.unlock()?;
        Ok(this)
    }

    /// Options to connect as the superuser to `database` over the private socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.data_dir)
            .port(SOCKET_PORT)
            .username(SUPERUSER)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
    }

    /// The application database, created if it does not exist.
    pub async fn ensure_database(&self) -> Result<PgConnectOptions> {
        let mut conn = PgConnection::connect_with(&self.connect_options("postgres"))
            .await
            .context("cannot connect to the embedded PostgreSQL")?;
        // Created unless it exists (42P04): asking first would race another process anyway.
        let sql = format!("CREATE DATABASE {}", quote_ident(&self.database));
        match conn.execute(sqlx::AssertSqlSafe(sql)).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("cannot create the embedded database"),
        }
        conn.close().await.ok();
        Ok(self.connect_options(&self.database))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server if no other syncbridge process still uses it. Blocking.
    pub fn stop(mut self) -> Result<bool> {
        let Some(usage) = self.usage.take() else {
            return Ok(false);
        };
        // No other process may start using the server while we decide to stop it.
        let setup = open_lock(&self.setup_lock_path)?;
        setup
            .lock()
            .context("cannot take the embedded setup lock")?;
        usage.unlock()?;
        match usage.try_lock() {
            Ok(()) => {
                let out = self
                    .pg_ctl_command()
                    .arg("stop")
                    .arg("-D")
                    .arg(&self.data_dir)
                    .args(["-m", "fast", "-w", "-t", "60"])
                    .output()
                    .context("cannot run pg_ctl stop")?;
                check_output("pg_ctl stop", &out)?;
                Ok(true)
            }
            Err(_) => {
                tracing::info!(
                    db.data_dir = %self.data_dir.display(),
                    "embedded PostgreSQL left running: another syncbridge process still uses it"
                );
                Ok(false)
            }
        }
    }

    fn init(&self, initdb: &Path, durable: bool) -> Result<()> {
        tracing::info!(db.data_dir = %self.data_dir.display(), "initialising the embedded PostgreSQL cluster");
        // A half-made directory from an interrupted initdb would make initdb refuse to run again.
        if self.data_dir.exists() {
            fs::remove_dir_all(&self.data_dir).with_context(|| {
                format!(
                    "cannot clear incomplete data directory {}",
                    self.data_dir.display()
                )
            })?;
        }
        fs::create_dir(&self.data_dir)
            .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))?;
        if let Some(user) = &self.server_user {
            std::os::unix::fs::chown(&self.data_dir, Some(user.uid), Some(user.gid)).with_context(
                || {
                    format!(
                        "cannot give {} to user {}",
                        self.data_dir.display(),
                        user.name
                    )
                },
            )?;
            self.check_server_user_can_reach_data_dir(user)?;
        }
        let out = self
            .as_server_user(Command::new(initdb))
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale"])
            .arg("--no-instructions")
            .output()
            .context("cannot run initdb")?;
        check_output("initdb", &out)?;

        let mut conf = format!(
            "\n# Added by syncbridge: private server, reachable only through its socket.\n\
             listen_addresses = ''\n\
             port = {SOCKET_PORT}\n\
             unix_socket_permissions = 0700\n\
             max_connections = 200\n"
        );
        if !durable {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut existing = fs::read_to_string(&conf_path)?;
        existing.push_str(&conf);
        fs::write(&conf_path, existing)?;
        Ok(())
    }

    fn is_running(&self) -> Result<bool> {
        let out = self
            .pg_ctl_command()
            .arg("status")
            .arg("-D")
            .arg(&self.data_dir)
            .output()
            .context("cannot run pg_ctl status")?;
        // pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
        match out.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => {
                check_output("pg_ctl status", &out)?;
                Ok(false)
            }
        }
    }

    fn start_server(&self) -> Result<()> {
        tracing::info!(db.data_dir = %self.data_dir.display(), "starting the embedded PostgreSQL");
        let log = self.data_dir.join("server.log");
        // The socket directory is given at each start so a moved data directory keeps working.
        let socket_dir = self.data_dir.to_string_lossy().into_owned();
        let out = self
            .pg_ctl_command()
            .arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-k '{socket_dir}'"))
            // Its own process group: a Ctrl-C in the terminal must reach syncbridge, which then
            // shuts down in order, not the database underneath it.
            .process_group(0)
            .stdin(Stdio::null())
            .output()
            .context("cannot run pg_ctl start")?;
        if let Err(e) = check_output("pg_ctl start", &out) {
            let tail = fs::read_to_string(&log)
                .map(|s| last_lines(&s, 15))
                .unwrap_or_default();
            bail!("{e:#}\nserver log {}:\n{tail}", log.display());
        }
        Ok(())
    }

    /// Crashes and restarts the server: an immediate stop (no checkpoint, every connection cut, as
    /// in a power loss; the next start recovers from the WAL), then a start. For fault drills.
    /// Blocking.
    pub fn crash_and_restart(&self) -> Result<()> {
        let out = self
            .pg_ctl_command()
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run pg_ctl stop")?;
        check_output("pg_ctl stop -m immediate", &out)?;
        self.start_server()
    }

    fn pg_ctl_command(&self) -> Command {
        let mut cmd = Command::new(&self.pg_ctl);
        self.as_server_user_mut(&mut cmd);
        cmd
    }

    fn as_server_user(&self, mut cmd: Command) -> Command {
        self.as_server_user_mut(&mut cmd);
        cmd
    }

    fn as_server_user_mut(&self, cmd: &mut Command) {
        if let Some(user) = &self.server_user {
            cmd.uid(user.uid).gid(user.gid);
            // HOME of root would be unreadable for the server user.
            cmd.env("HOME", &self.data_dir);
        }
    }

    fn check_server_user_can_reach_data_dir(&self, user: &OsUser) -> Result<()> {
        let ok = self
            .as_server_user(Command::new("test"))
            .arg("-w")
            .arg(&self.data_dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!(
                "the embedded PostgreSQL runs as user `{}` (syncbridge runs as root and PostgreSQL \
                 refuses root), but that user cannot reach {}: a parent directory is not searchable \
                 by other users. Set SYNCBRIDGE__DATABASE__EMBEDDED__DATA_DIR to a directory it can \
                 reach (e.g. /var/tmp/syncbridge/postgres), or set DATABASE_URL",
                user.name,
                self.data_dir.display()
            );
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct PgBinaries {
    pub initdb: PathBuf,
    pub pg_ctl: PathBuf,
}

/// `PATH` first, then Debian's versioned directories, newest version first.
pub fn default_search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    dirs
}

/// Finds `initdb` and `pg_ctl` in `bin_dir` when given, else in the first of `search` holding both.
pub fn find_binaries(bin_dir: Option<&Path>, search: &[PathBuf]) -> Result<PgBinaries> {
    let in_dir = |dir: &Path| {
        let initdb = dir.join("initdb");
        let pg_ctl = dir.join("pg_ctl");
        (is_executable(&initdb) && is_executable(&pg_ctl)).then_some(PgBinaries { initdb, pg_ctl })
    };
    if let Some(dir) = bin_dir {
        return in_dir(dir).with_context(|| {
            format!(
                "database.embedded.bin_dir is {} but it holds no executable initdb and pg_ctl",
                dir.display()
            )
        });
    }
    search.iter().find_map(|d| in_dir(d)).with_context(|| {
        "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or in \
         /usr/lib/postgresql/<version>/bin. Install them (Debian: `apt-get install postgresql`), \
         or set SYNCBRIDGE__DATABASE__EMBEDDED__BIN_DIR to the directory holding them, \
         or set DATABASE_URL to use an existing PostgreSQL server"
            .to_string()
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn resolve_server_user(preferred: &str) -> Result<OsUser> {
    for name in [preferred, "nobody"] {
        if let Some(user) = nix::unistd::User::from_name(name)? {
            if user.uid.is_root() {
                continue;
            }
            return Ok(OsUser {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            });
        }
    }
    bail!(
        "syncbridge runs as root and PostgreSQL refuses root, but neither user `{preferred}` nor \
         `nobody` exists to run it. Create one (`useradd --system postgres`) or set \
         SYNCBRIDGE__DATABASE__EMBEDDED__RUN_AS"
    )
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

fn check_data_dir_path(dir: &Path) -> Result<()> {
    let text = dir.to_string_lossy();
    if text.contains('\'') || text.contains('"') || text.contains('\\') {
        bail!(
            "the embedded data directory {text} contains a quote or backslash; choose another path"
        );
    }
    let socket = dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "the embedded data directory path {text} is too long for a unix socket (at most {} \
             bytes); set SYNCBRIDGE__DATABASE__EMBEDDED__DATA_DIR to a shorter path",
            MAX_SOCKET_PATH - ".s.PGSQL.5432".len() - 1
        );
    }
    Ok(())
}

fn lock_path(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    data_dir.with_file_name(name)
}

fn open_lock(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))
}

fn check_output(what: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        stderr.trim(),
        if stdout.trim().is_empty() {
            String::new()
        } else {
            format!("\n{}", stdout.trim())
        }
    )
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quotes an SQL identifier (doubling embedded quotes), for the few DDL statements that take one.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bin(dir: &Path, name: &str) {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn binaries_are_found_in_the_first_directory_holding_both() {
        let only_initdb = tempfile::tempdir().unwrap();
        fake_bin(only_initdb.path(), "initdb");
        let both = tempfile::tempdir().unwrap();
        fake_bin(both.path(), "initdb");
        fake_bin(both.path(), "pg_ctl");
        let found = find_binaries(
            None,
            &[only_initdb.path().to_path_buf(), both.path().to_path_buf()],
        )
        .unwrap();
        assert_eq!(found.pg_ctl, both.path().join("pg_ctl"));
        assert_eq!(found.initdb, both.path().join("initdb"));
    }

    #[test]
    fn missing_binaries_say_what_to_install_and_which_variable_to_set() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_binaries(None, &[empty.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("apt-get install postgresql"), "{err}");
        assert!(
            err.contains("SYNCBRIDGE__DATABASE__EMBEDDED__BIN_DIR"),
            "{err}"
        );
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn a_configured_bin_dir_without_binaries_is_named_in_the_error() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_binaries(Some(empty.path()), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&empty.path().display().to_string()), "{err}");
    }

    #[test]
    fn non_executable_files_are_not_binaries() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("initdb"), "").unwrap();
        fs::write(dir.path().join("pg_ctl"), "").unwrap();
        assert!(find_binaries(None, &[dir.path().to_path_buf()]).is_err());
    }

    #[test]
    fn overlong_data_dir_is_refused_before_anything_starts() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let err = check_data_dir_path(&long).unwrap_err().to_string();
        assert!(err.contains("too long"), "{err}");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    }
}

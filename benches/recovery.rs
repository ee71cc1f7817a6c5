//! Recovery benchmark: how fast `/readyz` tells a load balancer the database is gone (hung or
//! refusing), how fast it is ready again, and how long a killed maintenance leader delays a due
//! job until another process takes over.
//!
//! `cargo bench --bench recovery` starts the private durable PostgreSQL of the other benchmarks
//! (or uses `DATABASE_URL`), runs the real `syncbridge web` binary through a TCP proxy of this
//! benchmark that can forward, hang (accept and go silent, as a frozen server or a dropped
//! network does) or refuse, and prints medians over `BENCH_RUNS` (default 5) rounds. Results
//! are in `docs/BENCHMARKS.md`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

mod common;

use common::{BenchDb, Server, env_or, median};
use jobs::{Job, Maintenance, MaintenanceConfig, NewJob};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    Forward,
    /// Connections are accepted and bytes are read, but nothing is passed on either way.
    Hang,
    /// New connections are closed at once and open ones are cut.
    Refuse,
}

/// Forwards 127.0.0.1:<port> to the database, in the mode the sender last chose.
async fn proxy(target: sqlx::postgres::PgConnectOptions) -> (u16, watch::Sender<Link>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = watch::channel(Link::Forward);
    let target = Arc::new(target);
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (rx, target) = (rx.clone(), target.clone());
            tokio::spawn(async move {
                if *rx.borrow() == Link::Refuse {
                    return;
                }
                if let Some(dir) = target.get_socket() {
                    let path = dir.join(format!(".s.PGSQL.{}", target.get_port()));
                    if let Ok(server) = tokio::net::UnixStream::connect(path).await {
                        splice(client, server, rx).await;
                    }
                } else {
                    let addr = format!("{}:{}", target.get_host(), target.get_port());
                    if let Ok(server) = tokio::net::TcpStream::connect(addr).await {
                        splice(client, server, rx).await;
                    }
                }
            });
        }
    });
    (port, tx)
}

/// Pipes both ways between `client` and `server` until either side closes or the link refuses.
async fn splice(
    client: impl AsyncRead + AsyncWrite,
    server: impl AsyncRead + AsyncWrite,
    link: watch::Receiver<Link>,
) {
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    tokio::join!(pipe(cr, sw, link.clone()), pipe(sr, cw, link));
}

/// Copies `from` to `to` while the link forwards; holds bytes back while it hangs; stops when
/// it refuses or either side closes.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut link: watch::Receiver<Link>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read { Ok(0) | Err(_) => return, Ok(n) => n },
            changed = link.changed() => {
                if changed.is_err() || *link.borrow() == Link::Refuse { return }
                continue;
            }
        };
        loop {
            let mode = *link.borrow_and_update();
            match mode {
                Link::Forward => break,
                Link::Refuse => return,
                Link::Hang => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// One `/readyz`: its status and how long it took (a 10 s client timeout counts as 0, 10 s).
async fn probe(client: &reqwest::Client, base: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = match client
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    (status, started.elapsed())
}

#[derive(Serialize, Deserialize)]
struct Due;
impl Job for Due {
    const KIND: &'static str = "bench_due";
}

/// Kills a leading maintenance participant (its runtime dropped, as a killed process's tasks
/// are) with a job due in 50 ms, and returns how long until a second participant made it
/// available.
async fn handover(db: &BenchDb, config: &MaintenanceConfig) -> Duration {
    let leader_pool = db.pool.clone();
    let leader_config = config.clone();
    let doomed = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.spawn(
            Maintenance::new(leader_pool, leader_config, Vec::new()).run(CancellationToken::new()),
        );
        rt
    })
    .join()
    .unwrap();
    loop {
        let leader: Option<String> = sqlx::query_scalar(
            "SELECT leader_id FROM job_leader WHERE name = 'maintenance' AND expires_at > now()",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stop = CancellationToken::new();
    let successor = tokio::spawn(
        Maintenance::new(db.pool.clone(), config.clone(), Vec::new()).run(stop.clone()),
    );
    let mut conn = db.pool.acquire().await.unwrap();
    let job = NewJob::new(&Due)
        .unwrap()
        .run_at(chrono::Utc::now() + chrono::Duration::milliseconds(50));
    let id = jobs::Queue::default()
        .enqueue(&mut conn, &job)
        .await
        .unwrap();
    drop(conn);
    doomed.shutdown_background();
    let killed = Instant::now();
    loop {
        let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if state == "available" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = killed.elapsed();
    stop.cancel();
    successor.await.unwrap();
    sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    waited
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let runs = env_or("BENCH_RUNS", 5);
    let db = BenchDb::create("bench_recovery").await;
    let (port, link) = proxy(db.owner_options.clone()).await;
    let name = db.owner_options.get_database().unwrap().to_string();
    let user = db.owner_options.get_username().to_string();
    let url = format!("postgres://{user}@127.0.0.1:{port}/{name}?sslmode=disable");
    let server = Server::start(&url, "web", &[]).await;
    let client = reqwest::Client::new();

    let (mut up, mut hung, mut refused, mut back) = (vec![], vec![], vec![], vec![]);
    let mut statuses = Vec::new();
    for _ in 0..runs {
        for _ in 0..5 {
            let (status, took) = probe(&client, &server.base).await;
            assert_eq!(status, 200);
            up.push(ms(took));
        }
        for (mode, into) in [(Link::Hang, &mut hung), (Link::Refuse, &mut refused)] {
            link.send_replace(mode);
            for _ in 0..5 {
                let (status, took) = probe(&client, &server.base).await;
                statuses.push((mode, status));
                into.push(ms(took));
            }
        }
        link.send_replace(Link::Forward);
        let restored = Instant::now();
        while probe(&client, &server.base).await.0 != 200 {}
        back.push(ms(restored.elapsed()));
    }
    server.stop();
    let not_503 = statuses.iter().filter(|(_, s)| *s != 503).count();
    println!(
        "readyz, {runs} rounds × 5 probes: database up {:.1} ms; hung {:.0} ms; refusing {:.0} ms \
         (medians; {not_503} of {} probes while down were not 503); ready again {:.0} ms after the \
         database came back",
        median(up),
        median(hung),
        median(refused),
        statuses.len(),
        median(back),
    );

    for (label, lease) in [
        ("lease 3 intervals (now)", Duration::from_secs(3)),
        ("lease 15 s (before)", Duration::from_secs(15)),
    ] {
        let config = MaintenanceConfig {
            lease,
            ..MaintenanceConfig::default()
        };
        let mut waits = Vec::new();
        for _ in 0..runs.min(3) {
            waits.push(ms(handover(&db, &config).await));
        }
        println!(
            "due job after its leader was killed, {label}, interval 1 s: {:.0} ms (median of {})",
            median(waits.clone()),
            waits.len()
        );
    }
    db.finish().await;
}

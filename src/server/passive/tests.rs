//! The allocation rules, on real sockets: who shares a port, who waits.

use super::*;
use crate::tls::{certs, ServerTls, ServerTlsOptions, TlsVersion};

fn one_free_port() -> PortRange {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    PortRange { min: port, max: port }
}

fn claim(ip: &str, tls: Option<&ServerTls>, timeout_ms: u64) -> Claim {
    let ip: IpAddr = ip.parse().unwrap();
    Claim {
        client_ip: ip,
        key: ip,
        proxy: None,
        tls: tls.map(|t| ClaimTls {
            acceptors: t.for_session().unwrap(),
            direction: Arc::default(),
            require_reuse: true,
            go: tokio::sync::watch::channel(None).1,
        }),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn server_tls(dir: &std::path::Path) -> ServerTls {
    certs::init(dir, &["127.0.0.1".into()], certs::Holders::default(), false, certs::KeyType::Ecdsa).unwrap();
    ServerTls::load(ServerTlsOptions {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: None,
        min_version: TlsVersion::V12,
        cipher_suites: vec![],
    })
    .unwrap()
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[tokio::test]
async fn plain_setups_of_one_address_never_share_and_wait_until_425() {
    let metrics = Metrics::new();
    let pool = PassivePool::new(Arc::clone(&metrics));
    let range = one_free_port();
    let a = pool.reserve(LOCAL, range, claim("127.0.0.1", None, 200)).await.unwrap();
    // Another address shares the port.
    let other = pool.reserve(LOCAL, range, claim("127.0.0.2", None, 200)).await.unwrap();
    assert_eq!(a.port(), other.port());
    let started = Instant::now();
    let err = pool.reserve(LOCAL, range, claim("127.0.0.1", None, 200)).await.err().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(err, DataSetupFailure::PassivePortsBusy { ports: 1, waited: 0 });
    assert!(err.to_string().contains("hold all 1 passive ports"), "{err}");
    assert_eq!(Metrics::get(&metrics.passive_waits), 1);
    assert_eq!(Metrics::get(&metrics.passive_ports_exhausted), 1);
    // A TLS setup cannot join a plain one of its address either.
    let dir = tempfile::tempdir().unwrap();
    let tls = server_tls(dir.path());
    assert!(pool.reserve(LOCAL, range, claim("127.0.0.1", Some(&tls), 50)).await.is_err());
    // Freed while waited for: the waiter gets it.
    let waiter = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.reserve(LOCAL, range, claim("127.0.0.1", None, 5000)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(a);
    let b = tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(b.port(), other.port());
    assert_eq!(Metrics::get(&metrics.passive_reservations), 2);
    drop((b, other));
    assert_eq!(Metrics::get(&metrics.passive_reservations), 0);
}

#[tokio::test]
async fn tls_setups_of_one_address_share_the_least_used_port() {
    let metrics = Metrics::new();
    let pool = PassivePool::new(Arc::clone(&metrics));
    let dir = tempfile::tempdir().unwrap();
    let tls = server_tls(dir.path());
    let range = one_free_port();
    let held: Vec<Reservation> = {
        let mut v = vec![];
        for _ in 0..5 {
            v.push(pool.reserve(LOCAL, range, claim("127.0.0.1", Some(&tls), 50)).await.unwrap());
        }
        v
    };
    assert!(held.iter().all(|r| r.port() == range.min));
    assert_eq!(Metrics::get(&metrics.passive_waits), 0);
    // A plain setup of that address waits: it must be alone on its port.
    assert!(pool.reserve(LOCAL, range, claim("127.0.0.1", None, 50)).await.is_err());
    // Nothing but the one bound port is open, and it closes after the last
    // reservation and the linger.
    assert_eq!(Metrics::get(&metrics.passive_listeners_open), 1);
    drop(held);
    tokio::time::sleep(LINGER * 2 + Duration::from_millis(500)).await;
    assert_eq!(Metrics::get(&metrics.passive_listeners_open), 0);
    assert!(std::net::TcpListener::bind(("127.0.0.1", range.min)).is_ok(), "port still bound");
}

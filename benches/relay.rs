//! The data relay over loopback TCP: splice(2) against the userspace copy.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BYTES: usize = 64 * 1024 * 1024;

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    (c, s)
}

/// Sends BYTES from one end through the relay to the other, returns the count.
async fn once(splice: bool) -> u64 {
    let (mut src, a) = pair().await;
    let (b, mut dst) = pair().await;
    let relay = tokio::spawn(async move {
        let stall = Duration::from_secs(30);
        if splice {
            match ftpgate::relay::splice::relay(a, b, stall, &Default::default()).await {
                Ok(r) => r.a_to_b,
                Err(_) => panic!("no pipes"),
            }
        } else {
            ftpgate::relay::relay(a, b, stall, Duration::ZERO, &Default::default()).await.a_to_b
        }
    });
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 256 * 1024];
        for _ in 0..BYTES / chunk.len() {
            src.write_all(&chunk).await.unwrap();
        }
        src.shutdown().await.unwrap();
        src
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    loop {
        let n = dst.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, BYTES);
    drop(writer.await.unwrap());
    relay.await.unwrap()
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("relay 64 MiB over loopback");
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.sample_size(10);
    g.bench_function("splice", |b| b.iter(|| rt.block_on(once(true))));
    g.bench_function("copy", |b| b.iter(|| rt.block_on(once(false))));
    g.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);

//! Control-channel codecs: command decoding and reply parsing per line.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ftpgate::protocol::codec::CommandDecoder;
use ftpgate::protocol::reply::ReplyParser;
use std::hint::black_box;

fn commands(c: &mut Criterion) {
    let session: Vec<u8> =
        b"USER alice\r\nPASS secret\r\nTYPE I\r\nEPSV\r\nRETR /shared/reports/2026/q3.csv\r\nNOOP\r\n".repeat(100);
    let mut g = c.benchmark_group("commands");
    g.throughput(Throughput::Elements(600));
    g.bench_function("decode 600 command lines", |b| {
        b.iter(|| {
            let mut d = CommandDecoder::new();
            let mut buf = BytesMut::from(&session[..]);
            let mut n = 0;
            while let Some(c) = d.decode(&mut buf) {
                black_box(c.ok());
                n += 1;
            }
            n
        })
    });
    g.finish();
}

fn replies(c: &mut Criterion) {
    let mut input = b"150 Opening BINARY mode data connection.\r\n226 Transfer complete.\r\n".repeat(100);
    input.extend_from_slice(
        b"211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n211 End\r\n",
    );
    let mut g = c.benchmark_group("replies");
    g.throughput(Throughput::Elements(201));
    g.bench_function("parse 201 replies", |b| {
        b.iter(|| {
            let mut p = ReplyParser::new();
            let mut buf = BytesMut::from(&input[..]);
            let mut n = 0;
            while let Ok(Some(r)) = p.parse(&mut buf) {
                black_box(r.code);
                n += 1;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, commands, replies);
criterion_main!(benches);

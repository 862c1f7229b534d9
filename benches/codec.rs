//! Frame decode and encode micro-benchmarks.
//!
//! Run: `cargo bench --bench codec`. CI only compiles them
//! (`cargo bench --no-run`).

use std::hint::black_box;

use corecast_proto::{ClientFrame, Msg, Pub, ServerFrame};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn publish_frames(count: usize, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..count {
        ClientFrame::Pub(Pub { topic: "game.world.42.updates", reply_to: "", payload })
            .encode(&mut out);
    }
    out
}

fn decode_pub(c: &mut Criterion) {
    let bytes = publish_frames(1000, &[7u8; 64]);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("pub_64B_x1000", |b| {
        b.iter(|| {
            let mut src = black_box(&bytes[..]);
            let mut n = 0;
            while let Ok(Some(frame)) = ClientFrame::decode(&mut src, 1 << 20) {
                black_box(frame);
                n += 1;
            }
            assert_eq!(n, 1000);
        })
    });
    group.finish();
}

/// What a subscriber's receive loop does: `MSG` after `MSG`, through the
/// same `ServerFrame::decode` every client uses.
fn decode_msg(c: &mut Criterion) {
    let payload = [7u8; 64];
    let mut bytes = Vec::new();
    for sid in 0..1000u32 {
        ServerFrame::Msg(Msg {
            sid,
            topic: "game.world.42.updates",
            reply_to: "",
            payload: &payload,
        })
        .encode(&mut bytes);
    }
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("msg_64B_x1000", |b| {
        b.iter(|| {
            let mut src = black_box(&bytes[..]);
            let mut payload_bytes = 0;
            while let Ok(Some(ServerFrame::Msg(m))) = ServerFrame::decode(&mut src, 1 << 20) {
                payload_bytes += m.payload.len();
            }
            assert_eq!(payload_bytes, 64_000);
        })
    });
    group.finish();
}

fn encode_msg(c: &mut Criterion) {
    let payload = [7u8; 64];
    let mut buf = vec![0u8; 1 << 20];
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("msg_64B_x1000", |b| {
        b.iter(|| {
            let mut dst = &mut buf[..];
            for sid in 0..1000u32 {
                let frame = ServerFrame::Msg(Msg {
                    sid,
                    topic: "game.world.42.updates",
                    reply_to: "",
                    payload: black_box(&payload),
                });
                frame.encode(&mut dst);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, decode_pub, decode_msg, encode_msg);
criterion_main!(benches);

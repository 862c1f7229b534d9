//! `corecast-bench`: a load generator for a running corecast broker.
//!
//! Run a broker (`cargo run --release`), then for example
//! `cargo run --release -p corecast-bench -- fanout --subs 10 --msgs 200000 --size 64`.
//! Prints one JSON line per run. Loopback only; every run is bounded by
//! `--timeout-secs`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use corecast_proto::{ClientFrame, Hello, Pub, ServerFrame, Sub, VERSION};

#[derive(Debug, Parser)]
#[command(about = "Load generator for corecast")]
struct Cli {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:7400", global = true)]
    server: SocketAddr,
    /// Give up after this long.
    #[arg(long, default_value_t = 60, global = true)]
    timeout_secs: u64,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// One publisher, S subscribers on one topic.
    Fanout {
        /// Subscriber connections.
        #[arg(long, default_value_t = 10)]
        subs: usize,
        /// Messages to publish.
        #[arg(long, default_value_t = 100_000)]
        msgs: u64,
        /// Payload bytes (at least 8: the sequence number).
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
}

/// A blocking connection with a frame reader.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    fn open(addr: SocketAddr, name: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let mut c = Self { stream, buf: vec![0; 1 << 20], start: 0, end: 0 };
        c.send(&ClientFrame::Hello(Hello { version: VERSION, name, token: b"" }))?;
        match c.next(|f| matches!(f, ServerFrame::Welcome(_)))? {
            true => Ok(c),
            false => bail!("no WELCOME"),
        }
    }

    fn send(&mut self, frame: &ClientFrame<'_>) -> anyhow::Result<()> {
        let mut out = Vec::with_capacity(frame.encoded_len());
        frame.encode(&mut out);
        self.stream.write_all(&out)?;
        Ok(())
    }

    fn flush(&mut self, nonce: u64) -> anyhow::Result<()> {
        self.send(&ClientFrame::Ping { nonce })?;
        while !self.next(|f| matches!(f, ServerFrame::Pong { nonce: n } if *n == nonce))? {}
        Ok(())
    }

    /// Decodes the next frame and returns what `check` says of it.
    fn next(&mut self, mut check: impl FnMut(&ServerFrame<'_>) -> bool) -> anyhow::Result<bool> {
        loop {
            let mut src = &self.buf[self.start..self.end];
            let before = src.len();
            if let Some(frame) = ServerFrame::decode(&mut src, u32::MAX)? {
                if let ServerFrame::Err(e) = frame {
                    bail!("broker error {}: {}", e.code, e.text);
                }
                let verdict = check(&frame);
                self.start += before - src.len();
                return Ok(verdict);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.stream.read(&mut self.buf[self.end..])?;
            if n == 0 {
                bail!("broker closed the connection");
            }
            self.end += n;
        }
    }
}

fn fanout(cli: &Cli, subs: usize, msgs: u64, size: usize) -> anyhow::Result<()> {
    let size = size.max(8);
    let topic = "bench.fanout";
    let ready = Arc::new(Barrier::new(subs + 1));
    let deadline = Instant::now() + Duration::from_secs(cli.timeout_secs);
    let mut readers = Vec::new();
    for i in 0..subs {
        let mut conn = Conn::open(cli.server, &format!("sub-{i}"))?;
        conn.send(&ClientFrame::Sub(Sub { sid: 1, topic, queue_group: "", lossy: false }))?;
        conn.flush(1)?;
        conn.stream.set_read_timeout(Some(Duration::from_secs(cli.timeout_secs)))?;
        let ready = Arc::clone(&ready);
        readers.push(thread::spawn(move || -> anyhow::Result<(u64, u64, Instant)> {
            ready.wait();
            let (mut got, mut gaps, mut next) = (0u64, 0u64, 0u64);
            while got < msgs && Instant::now() < deadline {
                let mut seq = None;
                conn.next(|f| {
                    if let ServerFrame::Msg(m) = f {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&m.payload[..8]);
                        seq = Some(u64::from_le_bytes(b));
                    }
                    true
                })?;
                if let Some(s) = seq {
                    got += 1;
                    if s != next {
                        gaps += 1;
                    }
                    next = s + 1;
                }
            }
            Ok((got, gaps, Instant::now()))
        }));
    }
    let mut publisher = Conn::open(cli.server, "pub")?;
    ready.wait();
    let start = Instant::now();
    let mut batch = Vec::with_capacity(256 << 10);
    let mut payload = vec![0u8; size];
    for seq in 0..msgs {
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        ClientFrame::Pub(Pub { topic, reply_to: "", payload: &payload }).encode(&mut batch);
        if batch.len() >= 200 << 10 {
            publisher.stream.write_all(&batch)?;
            batch.clear();
        }
    }
    publisher.stream.write_all(&batch)?;
    publisher.flush(2)?;
    let published = start.elapsed();
    let (mut delivered, mut gaps, mut last) = (0, 0, start);
    for r in readers {
        let (got, g, at) = r.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        delivered += got;
        gaps += g;
        last = last.max(at);
    }
    let secs = (last - start).as_secs_f64();
    println!(
        "{{\"workload\":\"fanout\",\"subs\":{subs},\"msgs\":{msgs},\"size\":{size},\"published_per_s\":{:.0},\"delivered_per_s\":{:.0},\"lost\":{},\"gaps\":{gaps},\"seconds\":{secs:.3}}}",
        msgs as f64 / published.as_secs_f64(),
        delivered as f64 / secs,
        msgs * subs as u64 - delivered,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.workload {
        Workload::Fanout { subs, msgs, size } => fanout(&cli, subs, msgs, size),
    }
}

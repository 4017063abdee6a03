//! NATS JetStream: one file-storage stream, a subject per lane; producers
//! publish a batch with async publish acks and wait for them all; each
//! consumer has a durable pull consumer on its lanes' subjects, fetches up
//! to a batch and acknowledges it with one ack (`AckPolicy::All`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use crate::stats::{self, InFlight, Sampler, Stats};
use crate::{Class, Load, Peer, Server};

const PORT: u16 = 4222;

pub struct Nats {
    js: jetstream::Context,
    load: Load,
}

/// Starts nats-server with scripts/nats and creates the stream.
pub async fn start(scripts: &Path, dir: &Path, class: Class, load: &Load) -> Result<(Server, Arc<dyn Peer>)> {
    let script = scripts.join("nats");
    let mode = match class {
        Class::Sync => "sync",
        Class::Async => "async",
    };
    let out = std::process::Command::new(&script)
        .arg("start")
        .arg(dir)
        .arg(mode)
        .env("NATS_PORT", PORT.to_string())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/nats start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = std::fs::read_to_string(dir.join("nats.pid"))?.trim().parse()?;
    let (s, d) = (script.clone(), dir.to_path_buf());
    let server = Server::new(
        vec![pid],
        format!(
            "nats-server 2.15.2, JetStream file storage{}",
            if class == Class::Sync {
                ", sync_interval: always"
            } else {
                ", default sync (2 min)"
            }
        ),
        move || {
            let _ = std::process::Command::new(s).arg("stop").arg(d).output();
        },
    );
    let client = async_nats::connect(format!("127.0.0.1:{PORT}")).await?;
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "bench".into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the stream: {e}"))?;
    Ok((
        server,
        Arc::new(Nats {
            js,
            load: load.clone(),
        }),
    ))
}

impl Peer for Nats {
    fn produce(self: Arc<Self>, p: usize, stats: Arc<Stats>) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(async move {
            // cheap to clone per publish (shared bytes, not a new String)
            let subject = async_nats::Subject::from(format!("bench.{}", p % self.load.lanes()));
            let mut in_flight = InFlight::new(self.load.window, self.load.batch as u64);
            while !stats.stopped() {
                let t = Instant::now();
                let mut acks = Vec::with_capacity(self.load.batch);
                for _ in 0..self.load.batch {
                    let ev = bytes::Bytes::from(stats::binary_event(self.load.event_size));
                    let ack = self
                        .js
                        .publish(subject.clone(), ev)
                        .await
                        .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
                    acks.push(async move {
                        ack.await
                            .map(drop)
                            .map_err(|e| anyhow::anyhow!("publish ack: {e}"))
                    });
                }
                in_flight.push(t, acks, &stats).await?;
            }
            in_flight.drain(&stats).await?;
            Ok(())
        })
    }

    fn consume(
        self: Arc<Self>,
        c: usize,
        stats: Arc<Stats>,
        done: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(async move {
            let stream = self
                .js
                .get_stream("bench")
                .await
                .map_err(|e| anyhow::anyhow!("stream: {e}"))?;
            let subjects: Vec<String> = self
                .load
                .lanes_of(c)
                .iter()
                .map(|l| format!("bench.{l}"))
                .collect();
            let consumer: consumer::PullConsumer = stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(format!("c{c}")),
                    filter_subjects: subjects,
                    ack_policy: consumer::AckPolicy::All,
                    max_ack_pending: (self.load.batch * 4) as i64,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("consumer: {e}"))?;
            let mut sampler = Sampler::default();
            while !done.load(Ordering::Relaxed) {
                let mut msgs = consumer
                    .fetch()
                    .max_messages(self.load.batch)
                    .expires(Duration::from_millis(200))
                    .messages()
                    .await
                    .map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
                let mut last = None;
                while let Some(m) = msgs.next().await {
                    let m = m.map_err(|e| anyhow::anyhow!("message: {e}"))?;
                    sampler.see(|| stats::binary_sent(&m.payload));
                    last = Some(m);
                }
                if let Some(m) = last {
                    m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                    sampler.acked(&stats);
                }
            }
            Ok(())
        })
    }
}

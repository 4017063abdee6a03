//! RabbitMQ: a queue per lane, quorum queues (`sync`: written to disk and
//! fsynced before the confirm) or streams (`async`); producers publish a
//! batch with publisher confirms and wait for them; each consumer takes
//! its lanes' queues with a prefetch of two batches and acknowledges a
//! batch with one `multiple` ack.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::stats::{self, InFlight, Sampler, Stats};
use crate::{Class, Load, Peer, Server};

const PORT: u16 = 5720;

pub struct Rabbit {
    conn: Connection,
    class: Class,
    load: Load,
}

fn queue(lane: usize) -> String {
    format!("bench.{lane}")
}

/// Starts a RabbitMQ node with scripts/rabbitmq and declares the queues.
pub async fn start(scripts: &Path, dir: &Path, class: Class, load: &Load) -> Result<(Server, Arc<dyn Peer>)> {
    let script = scripts.join("rabbitmq");
    let out = std::process::Command::new(&script)
        .arg("start")
        .arg(dir)
        .arg(PORT.to_string())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/rabbitmq start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = std::fs::read_to_string(dir.join(PORT.to_string()).join("erl.pid"))?
        .trim()
        .parse()?;
    let (s, d) = (script.clone(), dir.to_path_buf());
    let server = Server::new(
        vec![pid],
        format!(
            "RabbitMQ 3.10.8 (Debian), {}, publisher confirms, persistent messages",
            match class {
                Class::Sync => "quorum queues",
                Class::Async => "streams",
            }
        ),
        move || {
            let _ = std::process::Command::new(s).arg("stop").arg(d).output();
        },
    );
    let conn = Connection::connect(
        &format!("amqp://127.0.0.1:{PORT}/%2f"),
        ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    for lane in 0..load.lanes() {
        let mut args = FieldTable::default();
        let kind = match class {
            Class::Sync => "quorum",
            Class::Async => "stream",
        };
        args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        ch.queue_declare(
            queue(lane).as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    }
    Ok((
        server,
        Arc::new(Rabbit {
            conn,
            class,
            load: load.clone(),
        }),
    ))
}

impl Peer for Rabbit {
    fn produce(self: Arc<Self>, p: usize, stats: Arc<Stats>) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(async move {
            let ch = self.conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let q = queue(p % self.load.lanes());
            let props = BasicProperties::default().with_delivery_mode(2);
            let mut in_flight = InFlight::new(self.load.window, self.load.batch as u64);
            // lapin copies the payload into its frames: one buffer serves every event
            let mut ev = stats::binary_event(self.load.event_size);
            while !stats.stopped() {
                let t = Instant::now();
                let mut acks = Vec::with_capacity(self.load.batch);
                for _ in 0..self.load.batch {
                    stats::stamp(&mut ev);
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            q.as_str().into(),
                            BasicPublishOptions::default(),
                            &ev,
                            props.clone(),
                        )
                        .await?;
                    acks.push(async move {
                        anyhow::ensure!(confirm.await?.is_ack(), "a publish was nacked");
                        Ok(())
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
            let ch = self.conn.create_channel().await?;
            ch.basic_qos((self.load.batch * 2) as u16, BasicQosOptions::default())
                .await?;
            let mut consumers = Vec::new();
            for lane in self.load.lanes_of(c) {
                let mut args = FieldTable::default();
                if self.class == Class::Async {
                    args.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
                }
                consumers.push(
                    ch.basic_consume(
                        queue(lane).as_str().into(),
                        format!("c{c}-{lane}").as_str().into(),
                        BasicConsumeOptions::default(),
                        args,
                    )
                    .await?,
                );
            }
            let mut all = futures::stream::select_all(consumers);
            let (mut sampler, mut last) = (Sampler::default(), None);
            while !done.load(Ordering::Relaxed) {
                let d = tokio::time::timeout(Duration::from_millis(100), all.next()).await;
                if let Ok(Some(d)) = d {
                    let d = d?;
                    sampler.see(|| stats::binary_sent(&d.data));
                    last = Some(d.delivery_tag);
                    if sampler.pending() < self.load.batch as u64 {
                        continue;
                    }
                }
                // a batch, or what came before a pause: one ack for all
                if let Some(tag) = last.take() {
                    ch.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
                    sampler.acked(&stats);
                }
            }
            Ok(())
        })
    }
}

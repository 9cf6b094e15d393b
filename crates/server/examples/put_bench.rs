//! Quick put benchmark against running members: `put_bench <endpoint,...> <clients> <total>`.
//! Prints throughput and latency percentiles. (The full benchmark lives with the CLI.)

use std::time::{Duration, Instant};

use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::PutRequest;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let endpoints: Vec<String> = args
        .get(1)
        .map(|s| s.split(',').map(|e| format!("http://{e}")).collect())
        .unwrap_or_else(|| vec!["http://127.0.0.1:2379".into()]);
    let clients: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let total: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let per_client = total / clients;
    let mut conns = Vec::new();
    for e in &endpoints {
        conns.push(KvClient::connect(e.clone()).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = conns[c % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                kv.put(PutRequest {
                    key: format!("bench/{c}/{i}").into_bytes().into(),
                    value: vec![b'x'; 256].into(),
                    ..Default::default()
                })
                .await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let el = start.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "clients={clients} puts={} elapsed={:.2}s throughput={:.0}/s p50={:?} p99={:?} max={:?}",
        lat.len(),
        el.as_secs_f64(),
        lat.len() as f64 / el.as_secs_f64(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}

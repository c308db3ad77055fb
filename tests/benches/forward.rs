//! The cost of a forwarded long-poll request: two nodes on the machine's
//! Redis, one long-polling connection negotiated on node A, and the same
//! Echo round trips (POST the invocation, poll for its completion) sent
//! straight to A and then through node B, which passes each request on to A.
//! Side by side in one run, on one machine whose 2 cores also run Redis and
//! the client: the difference is what forwarding adds.

use hubhost_tests::{REDIS_URL, TestServer, cluster_config, unique_prefix, wait_until};
use std::time::{Duration, Instant};

const ROUND_TRIPS: usize = 2_000;
const WARM_UP: usize = 100;

struct Connection {
    client: reqwest::Client,
    token: String,
}

impl Connection {
    /// Negotiate on `owner`, start long polling and do the handshake.
    async fn open(owner: &TestServer) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let negotiated: serde_json::Value = client
            .post(owner.url("/demo/chat/negotiate?negotiateVersion=1"))
            .send()
            .await?
            .json()
            .await?;
        let token = negotiated["connectionToken"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no token in {negotiated}"))?
            .to_owned();
        let connection = Self { client, token };
        anyhow::ensure!(
            connection.poll(owner).await?.is_empty(),
            "first poll not empty"
        );
        connection
            .post(owner, "{\"protocol\":\"json\",\"version\":1}\u{1e}")
            .await?;
        anyhow::ensure!(
            connection.poll(owner).await? == "{}\u{1e}",
            "no handshake reply"
        );
        Ok(connection)
    }

    fn url(&self, server: &TestServer) -> String {
        server.url(&format!("/demo/chat?id={}", self.token))
    }

    async fn post(&self, server: &TestServer, body: &str) -> anyhow::Result<()> {
        let response = self
            .client
            .post(self.url(server))
            .body(body.to_owned())
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "POST: {}", response.status());
        Ok(())
    }

    async fn poll(&self, server: &TestServer) -> anyhow::Result<String> {
        let response = self.client.get(self.url(server)).send().await?;
        anyhow::ensure!(response.status() == 200, "poll: {}", response.status());
        Ok(response.text().await?)
    }

    /// One Echo: POST the invocation and poll until its completion.
    async fn echo(&self, via: &TestServer, n: usize) -> anyhow::Result<()> {
        let id = n.to_string();
        self.post(
            via,
            &format!("{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"Echo\",\"arguments\":[{n}]}}\u{1e}"),
        )
        .await?;
        let expected = format!("\"invocationId\":\"{id}\",\"result\":{n}");
        while !self.poll(via).await?.contains(&expected) {}
        Ok(())
    }
}

/// Percentile of sorted microseconds.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Round trips through `via`; (mean, p50, p99) in microseconds.
async fn measure(
    connection: &Connection,
    via: &TestServer,
    first: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    for n in 0..WARM_UP {
        connection.echo(via, first + n).await?;
    }
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for n in 0..ROUND_TRIPS {
        let start = Instant::now();
        connection.echo(via, first + WARM_UP + n).await?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    Ok((mean, pct(&times, 0.5), pct(&times, 0.99)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let prefix = unique_prefix("bench-forward");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut config = cluster_config(REDIS_URL, &prefix);
        config.backplane.heartbeat_interval = std::time::Duration::from_millis(200);
        nodes.push(TestServer::start(config).await?);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    // B passes requests on once it has heard A's heartbeat.
    let probe = Connection::open(a).await?;
    wait_until(Duration::from_secs(10), || {
        b.state.cluster.node_url(a.state.cluster.node()).is_some()
    })
    .await?;
    drop(probe);

    let connection = Connection::open(a).await?;
    let direct = measure(&connection, a, 0).await?;
    let forwarded = measure(&connection, b, 1_000_000).await?;
    // And direct again, in case the machine got busier meanwhile.
    let direct_again = measure(&connection, a, 2_000_000).await?;

    println!("long polling, Echo round trip = POST + poll (2 requests), {ROUND_TRIPS} each, µs:");
    println!("{:<28} {:>9} {:>9} {:>9}", "", "mean", "p50", "p99");
    for (name, (mean, p50, p99)) in [
        ("straight to the owner", direct),
        ("through the other node", forwarded),
        ("straight again", direct_again),
    ] {
        println!("{name:<28} {mean:>9.0} {p50:>9.0} {p99:>9.0}");
    }
    let base = (direct.0 + direct_again.0) / 2.0;
    println!(
        "forwarding adds {:.0} µs per round trip = {:.0} µs per request ({:.2}× the direct round trip)",
        forwarded.0 - base,
        (forwarded.0 - base) / 2.0,
        forwarded.0 / base
    );
    for node in nodes {
        node.stop().await?;
    }
    Ok(())
}

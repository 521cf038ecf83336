//! Shared fixtures: a full Isobar stack on ephemeral ports, endpoint listeners that can be
//! stopped, and small DNS/HTTP/gRPC clients that speak real bytes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use isobar::{Role, Running, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Probe interval in the test world, milliseconds.
pub const INTERVAL_MS: u64 = 100;
/// Consecutive failures before a target goes down in the test world.
pub const FALL: u64 = 3;

/// A TCP listener per PoP that can be taken away and brought back on the same port.
pub struct Listeners {
    ports: Vec<u16>,
    running: Vec<Option<CancellationToken>>,
}

impl Listeners {
    pub async fn start_all(n: usize) -> Self {
        let mut this = Self {
            ports: Vec::new(),
            running: Vec::new(),
        };
        for _ in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            this.ports.push(listener.local_addr().expect("addr").port());
            this.running.push(Some(spawn_accept(listener)));
        }
        this
    }

    pub fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(token) = self.running[i].take() {
            token.cancel();
        }
    }

    pub async fn restart(&mut self, i: usize) {
        let listener = TcpListener::bind(("127.0.0.1", self.ports[i]))
            .await
            .expect("rebind");
        self.running[i] = Some(spawn_accept(listener));
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for token in self.running.iter().flatten() {
            token.cancel();
        }
    }
}

fn spawn_accept(listener: TcpListener) -> CancellationToken {
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => drop(accepted),
            }
        }
    });
    token
}

/// The test world: fra1 (Frankfurt), iad1 (Ashburn), sin1 (Singapore), one IPv4 and one IPv6
/// endpoint each, health-checked against `listeners`.
pub fn world_toml(listeners: &Listeners) -> String {
    let (f, i, s) = (listeners.port(0), listeners.port(1), listeners.port(2));
    format!(
        r#"
[defaults]
ttl = 20
answers = 2

[health]
interval_ms = {INTERVAL_MS}
timeout_ms = 100
fall = {FALL}
rise = 2

[[regions]]
name = "eu"
lat = 50.0
lon = 10.0

[[regions]]
name = "na"
lat = 39.0
lon = -95.0

[[regions]]
name = "ap"
lat = 15.0
lon = 115.0

[[pops]]
name = "fra1"
region = "eu"
lat = 50.11
lon = 8.68
replica_slots = 4

[[pops]]
name = "iad1"
region = "na"
lat = 39.04
lon = -77.49
replica_slots = 4

[[pops]]
name = "sin1"
region = "ap"
lat = 1.35
lon = 103.82
replica_slots = 4

[[zones]]
name = "example.test."
records = [
  "@ 3600 IN SOA ns1.example.test. hostmaster.example.test. 1 7200 900 1209600 300",
  "@ 3600 IN NS ns1.example.test.",
  "ns1 3600 IN A 127.0.0.1",
  "static 300 IN A 192.0.2.200",
]

[[client_groups]]
name = "office"
cidrs = ["10.10.0.0/16"]
region = "ap"

[[services]]
name = "www.example.test."
demand = ["eu", "na", "ap"]
endpoints = [
  {{ pop = "fra1", address = "192.0.2.10", check = "127.0.0.1:{f}" }},
  {{ pop = "fra1", address = "2001:db8:f::10", check = "127.0.0.1:{f}" }},
  {{ pop = "iad1", address = "198.51.100.10", check = "127.0.0.1:{i}" }},
  {{ pop = "iad1", address = "2001:db8:a::10", check = "127.0.0.1:{i}" }},
  {{ pop = "sin1", address = "203.0.113.10", check = "127.0.0.1:{s}" }},
  {{ pop = "sin1", address = "2001:db8:5::10", check = "127.0.0.1:{s}" }},
]
"#
    )
}

/// Options for a full stack on ephemeral ports, with the demo GeoIP database.
pub fn options(dir: &Path, config: &Path) -> ServeOptions {
    let geoip = dir.join("geo.mmdb");
    std::fs::write(
        &geoip,
        isobar::demo::geoip_database(isobar::demo::GEO_FIXTURE).expect("mmdb"),
    )
    .expect("write mmdb");
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    ServeOptions {
        roles: [Role::Scheduler, Role::Dns, Role::Http, Role::Prober].into(),
        db: format!("sqlite://{}", dir.join("isobar.db").display()),
        config: Some(config.to_path_buf()),
        dns: any,
        http: any,
        grpc: any,
        scheduler_url: None,
        token: None,
        geoip: Some(geoip),
        asn_db: None,
        data_dir: dir.to_path_buf(),
        node_name: "test".into(),
        dns_limits: Default::default(),
        echo_listen: None,
        load_agent: None,
        tls: Default::default(),
        demand_interval: Duration::from_millis(200),
    }
}

/// A running stack and what it needs to stay alive.
pub struct Stack {
    pub running: Running,
    pub listeners: Listeners,
    /// Kept alive so the store and persisted snapshots outlive the test body.
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(world_toml).await
    }

    /// A stack serving the world `world` writes for the three PoP listeners.
    pub async fn start_with(world: impl FnOnce(&Listeners) -> String) -> Self {
        let listeners = Listeners::start_all(3).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("world.toml");
        std::fs::write(&config, world(&listeners)).expect("write config");
        let running = isobar::start(options(dir.path(), &config), None)
            .await
            .expect("stack starts");
        let stack = Self {
            running,
            listeners,
            _dir: dir,
        };
        stack.wait_for_snapshot().await;
        stack
    }

    pub async fn wait_for_snapshot(&self) {
        let engine = self.running.engine.as_ref().expect("engine");
        eventually(Duration::from_secs(10), || async { engine.version() > 0 }).await;
    }

    pub fn dns(&self) -> SocketAddr {
        self.running.dns.expect("dns role")
    }

    pub fn http_url(&self, path_and_query: &str) -> String {
        format!(
            "http://{}{path_and_query}",
            self.running.http.expect("http role")
        )
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.running.grpc.expect("scheduler role"))
    }
}

/// Polls `check` every 20 ms until it holds; panics after `limit`. Returns the time taken.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Builds a query, optionally with an ECS option like "192.0.2.1/24".
pub fn query(name: &str, rtype: RecordType, ecs: Option<&str>) -> Message {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    if let Some(subnet) = ecs {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut().insert(EdnsOption::Subnet(
            subnet.parse::<ClientSubnet>().expect("subnet"),
        ));
        msg.set_edns(edns);
    }
    msg
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xffff) as u16
}

/// Sends `msg` over UDP and returns the response. Like a stub resolver it retries (three
/// tries, 2 s each): a single lost datagram on a loaded CI machine is not a server bug.
pub async fn udp(server: SocketAddr, msg: &Message) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let bytes = msg.to_vec().expect("encode");
    let mut buf = vec![0u8; 65535];
    for _ in 0..3 {
        socket.send_to(&bytes, server).await.expect("send");
        if let Ok(received) =
            tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await
        {
            let n = received.expect("recv");
            return Message::from_vec(&buf[..n]).expect("decode response");
        }
    }
    panic!("no UDP answer from {server} after 3 tries");
}

/// One UDP try: the response, or `None` when nothing came back within `limit`. For
/// readiness loops, where a server that is still starting may stay silent.
pub async fn try_udp(server: SocketAddr, msg: &Message, limit: Duration) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    socket.send_to(&msg.to_vec().ok()?, server).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(limit, socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..n]).ok()
}

/// Sends `msg` over TCP (RFC 1035 length framing) and returns the response.
pub async fn tcp(server: SocketAddr, msg: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let bytes = msg.to_vec().expect("encode");
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .expect("write");
    stream.write_all(&bytes).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut len))
        .await
        .expect("tcp answer in time")
        .expect("read");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await.expect("read");
    Message::from_vec(&buf).expect("decode response")
}

/// The addresses in a response's answer section, in order.
pub fn addresses(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// The ECS option of a response, if any.
pub fn ecs_of(msg: &Message) -> Option<ClientSubnet> {
    match msg
        .edns
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(s) => Some(*s),
        _ => None,
    }
}

/// GET a URL and return (status, JSON body).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.expect("http request");
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("json body");
    (status, body)
}

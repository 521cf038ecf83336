//! A userspace impairment proxy for UDP: adds a fixed delay to every datagram towards the
//! upstream and drops a random share of them (the kernel here has no netem).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// What the proxy does to traffic towards the upstream.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    pub delay: Duration,
    pub drop_percent: u32,
}

/// Relays datagrams from clients on `listen` to `upstream` and back until `stop`. Each client
/// gets its own upstream socket so replies find their way back.
pub async fn run(
    listen: std::net::UdpSocket,
    upstream: SocketAddr,
    imp: Impairment,
    stop: CancellationToken,
) {
    listen.set_nonblocking(true).expect("nonblocking");
    let listen = Arc::new(UdpSocket::from_std(listen).expect("tokio socket"));
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, client) = tokio::select! {
            () = stop.cancelled() => return,
            r = listen.recv_from(&mut buf) => match r { Ok(v) => v, Err(_) => continue },
        };
        let up = match clients.get(&client) {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(UdpSocket::bind("0.0.0.0:0").await.expect("bind upstream"));
                s.connect(upstream).await.expect("connect upstream");
                clients.insert(client, Arc::clone(&s));
                let (back, listen, stop) = (Arc::clone(&s), Arc::clone(&listen), stop.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            r = back.recv(&mut buf) => if let Ok(n) = r {
                                let _ = listen.send_to(&buf[..n], client).await;
                            },
                        }
                    }
                });
                s
            }
        };
        if rand::random_range(0..100) < imp.drop_percent {
            continue;
        }
        let packet = buf[..n].to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(imp.delay).await;
            let _ = up.send(&packet).await;
        });
    }
}

//! Frontend tests over real sockets: DNS (UDP/TCP), HTTPDNS, the gRPC subscriber, and
//! snapshot validation. One binary, so the suite links once.

mod asn;
mod dns;
mod doh;
mod dynamic;
mod geo;
mod http1;
mod http2;
mod httpdns;
mod knot;
mod limits;
mod rum;
mod snapshots;
mod subscriber;
mod support;

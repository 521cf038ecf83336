//! Batched UDP I/O on Linux: `recvmmsg`/`sendmmsg` move up to [`BATCH`] packets per system call.
//!
//! The profile of the per-packet loop (BENCHMARKS.md) showed ~70 % of the frontend's CPU in
//! the kernel's per-call overhead of one `recvfrom` and one `sendto` per query; batching is
//! how Knot, NSD and gdnsd amortize it. `MSG_WAITFORONE` blocks for the first packet only,
//! so a lone query is answered as soon as it arrives.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Packets per system call.
pub(super) const BATCH: usize = 32;

/// Buffers for one batch: received packets, their senders, and the responses.
pub(super) struct Batch {
    packets: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    lens: Vec<usize>,
    /// One response buffer per packet; empty = nothing to send.
    pub(super) out: Vec<Vec<u8>>,
}

impl Batch {
    /// Buffers for [`BATCH`] packets of up to `packet_size` bytes.
    pub(super) fn new(packet_size: usize, out_capacity: usize) -> Self {
        Self {
            packets: (0..BATCH).map(|_| vec![0u8; packet_size]).collect(),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            addr_lens: vec![0; BATCH],
            lens: vec![0; BATCH],
            out: (0..BATCH)
                .map(|_| Vec::with_capacity(out_capacity))
                .collect(),
        }
    }

    /// Waits for at least one packet (or the socket's read timeout) and takes up to
    /// [`BATCH`] without waiting further. Returns how many arrived.
    pub(super) fn receive(&mut self, socket: &std::net::UdpSocket) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = self
            .packets
            .iter_mut()
            .map(|p| libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: p.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|i| {
                // SAFETY: msghdr is plain old data; the fields that matter are set below.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = &raw mut iovecs[i];
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: every header points at live buffers owned by `self` / `iovecs`, which
        // outlive the call; the kernel writes at most the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in headers.iter().take(n).enumerate() {
            self.lens[i] = h.msg_len as usize;
            self.addr_lens[i] = h.msg_hdr.msg_namelen;
        }
        Ok(n)
    }

    /// Packet `i` of the last [`receive`](Self::receive) and its sender.
    pub(super) fn packet(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let addr = to_socket_addr(&self.addrs[i], self.addr_lens[i])?;
        Some((&self.packets[i][..self.lens[i]], addr))
    }

    /// Sends every non-empty `out[i]` (i < n) back to the sender of packet `i`.
    pub(super) fn send(&mut self, socket: &std::net::UdpSocket, n: usize) -> io::Result<()> {
        let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        for i in 0..n {
            if !self.out[i].is_empty() {
                iovecs.push(libc::iovec {
                    iov_base: self.out[i].as_mut_ptr().cast(),
                    iov_len: self.out[i].len(),
                });
                targets.push(i);
            }
        }
        let mut headers: Vec<libc::mmsghdr> = targets
            .iter()
            .zip(iovecs.iter_mut())
            .map(|(&i, iov)| {
                // SAFETY: plain old data; the fields that matter are set below.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
                h.msg_hdr.msg_namelen = self.addr_lens[i];
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let mut sent = 0;
        while sent < headers.len() {
            // SAFETY: the headers point at live buffers in `self` and `iovecs`.
            let r = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers[sent..].as_mut_ptr(),
                    (headers.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (e.g. an unreachable peer) and go on.
                sent += 1;
                tracing::debug!(%error, "udp send failed");
                continue;
            }
            sent += r as usize;
        }
        Ok(())
    }
}

fn to_socket_addr(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let v4 = unsafe { &*(std::ptr::from_ref(addr).cast::<libc::sockaddr_in>()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe { &*(std::ptr::from_ref(addr).cast::<libc::sockaddr_in6>()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

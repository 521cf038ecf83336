//! Batched UDP I/O on Linux: `recvmmsg`/`sendmmsg` move up to [`BATCH`] packets per system call.
//!
//! The profile of the per-packet loop (BENCHMARKS.md) showed ~70 % of the frontend's CPU in
//! the kernel's per-call overhead of one `recvfrom` and one `sendto` per query; batching is
//! how Knot, NSD and gdnsd amortize it. `MSG_WAITFORONE` blocks for the first packet only,
//! so a lone query is answered as soon as it arrives. The message headers are built once
//! and reused, so a batch allocates nothing.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Packets per system call.
pub(super) const BATCH: usize = 32;

/// Buffers for one batch: received packets, their senders, and the responses.
///
/// `recv_headers` and `send_headers` hold raw pointers into the heap blocks of
/// `packets`, `addrs`, `recv_iovecs` and `send_iovecs`. Those vectors are sized once in
/// [`Batch::new`] and never grow or shrink, so the pointers stay valid for the life of
/// the value (moving a `Vec` does not move its heap block). The raw pointers also keep
/// `Batch` on the thread that made it.
pub(super) struct Batch {
    packets: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    recv_iovecs: Vec<libc::iovec>,
    recv_headers: Vec<libc::mmsghdr>,
    send_iovecs: Vec<libc::iovec>,
    send_headers: Vec<libc::mmsghdr>,
    /// One response buffer per packet; empty = nothing to send.
    pub(super) out: Vec<Vec<u8>>,
}

/// An all-zero message header: plain old data, every pointer null.
fn empty_header() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
    unsafe { zeroed() }
}

impl Batch {
    /// Buffers for [`BATCH`] packets of up to `packet_size` bytes.
    pub(super) fn new(packet_size: usize, out_capacity: usize) -> Self {
        let mut packets: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; packet_size]).collect();
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut addrs: Vec<libc::sockaddr_storage> =
            (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut recv_iovecs: Vec<libc::iovec> = packets
            .iter_mut()
            .map(|p| libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: p.len(),
            })
            .collect();
        let recv_headers = recv_iovecs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| {
                let mut h = empty_header();
                h.msg_hdr.msg_name = std::ptr::from_mut(addr).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let mut send_iovecs: Vec<libc::iovec> = (0..BATCH)
            .map(|_| libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            })
            .collect();
        let send_headers = send_iovecs
            .iter_mut()
            .map(|iov| {
                let mut h = empty_header();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Self {
            packets,
            addrs,
            recv_iovecs,
            recv_headers,
            send_iovecs,
            send_headers,
            out: (0..BATCH)
                .map(|_| Vec::with_capacity(out_capacity))
                .collect(),
        }
    }

    /// Waits for at least one packet (or the socket's read timeout) and takes up to
    /// [`BATCH`] without waiting further. Returns how many arrived.
    pub(super) fn receive(&mut self, socket: &std::net::UdpSocket) -> io::Result<usize> {
        self.receive_with(socket, libc::MSG_WAITFORONE)
    }

    fn receive_with(
        &mut self,
        socket: &std::net::UdpSocket,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        for h in &mut self.recv_headers {
            // The kernel overwrites the name length with the sender's; restore the room.
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: every header points at live buffers owned by `self` (see the type's
        // invariant); the kernel writes at most the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.recv_headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Packet `i` of the last [`receive`](Self::receive) and its sender.
    pub(super) fn packet(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let h = &self.recv_headers[i];
        let addr = to_socket_addr(&self.addrs[i], h.msg_hdr.msg_namelen)?;
        let len = (h.msg_len as usize).min(self.recv_iovecs[i].iov_len);
        Some((&self.packets[i][..len], addr))
    }

    /// Sends every non-empty `out[i]` (i < n) back to the sender of packet `i`.
    pub(super) fn send(&mut self, socket: &std::net::UdpSocket, n: usize) {
        let mut count = 0;
        for i in 0..n.min(BATCH) {
            if self.out[i].is_empty() {
                continue;
            }
            self.send_iovecs[count].iov_base = self.out[i].as_mut_ptr().cast();
            self.send_iovecs[count].iov_len = self.out[i].len();
            let h = &mut self.send_headers[count].msg_hdr;
            h.msg_name = std::ptr::from_mut(&mut self.addrs[i]).cast();
            h.msg_namelen = self.recv_headers[i].msg_hdr.msg_namelen;
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers [sent, count) point at live buffers in `self`: the iovecs
            // were just aimed at `out` and the names at `addrs`, neither touched since.
            let r = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.send_headers[sent..count].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
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

/// Turns off path-MTU discovery for answers, as gdnsd and Knot do: a DNS answer over UDP
/// never relies on it (EDNS sizes bound it), and without it the kernel neither sets DF
/// nor consults the route's PMTU state on every send. `IP_PMTUDISC_OMIT` also ignores
/// forged "fragmentation needed" ICMP; kernels without it get `IP_PMTUDISC_DONT`.
pub(super) fn disable_pmtu_discovery(socket: &std::net::UdpSocket, ipv6: bool) -> io::Result<()> {
    let (level, name, omit, dont) = if ipv6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_OMIT,
            libc::IPV6_PMTUDISC_DONT,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_OMIT,
            libc::IP_PMTUDISC_DONT,
        )
    };
    set_int(socket, level, name, omit).or_else(|_| set_int(socket, level, name, dont))
}

fn set_int(
    socket: &std::net::UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its exact size is passed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

//! A network lab made of real namespaces: one core router and N PoPs joined by veth pairs.
//!
//! PoP `i` (1-based) is `10.77.i.2/24` on its link, the core is `10.77.i.1` on the same link
//! and forwards between links. Namespaces get unique names and are deleted on drop (also when
//! a test panics), which removes their veths with them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why a lab cannot be built on this host.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// The namespaces of one test; removed on drop.
pub struct Lab {
    pub core: String,
    pub pops: Vec<String>,
}

/// Runs `ip` (or `ip netns exec <ns> ...`) and returns stderr on failure.
pub fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// Builds a core and `pops` PoP namespaces.
    pub fn new(pops: usize) -> Result<Self, Unavailable> {
        let id = format!(
            "iso{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            core: format!("{id}core"),
            pops: Vec::new(),
        };
        run(&["ip", "netns", "add", &lab.core]).map_err(Unavailable)?;
        let setup = |lab: &mut Lab| -> Result<(), String> {
            let core = lab.core.clone();
            run(&["ip", "-n", &core, "link", "set", "lo", "up"])?;
            run(&[
                "ip",
                "netns",
                "exec",
                &core,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])?;
            for i in 1..=pops {
                let ns = format!("{id}p{i}");
                run(&["ip", "netns", "add", &ns])?;
                lab.pops.push(ns.clone());
                let (c_if, p_if) = (format!("{id}c{i}"), format!("{id}v{i}"));
                run(&[
                    "ip", "link", "add", &c_if, "netns", &core, "type", "veth", "peer", "name",
                    &p_if, "netns", &ns,
                ])?;
                let c_ip = format!("10.77.{i}.1/24");
                let p_ip = format!("10.77.{i}.2/24");
                let gw = format!("10.77.{i}.1");
                run(&["ip", "-n", &core, "addr", "add", &c_ip, "dev", &c_if])?;
                run(&["ip", "-n", &core, "link", "set", &c_if, "up"])?;
                run(&["ip", "-n", &ns, "addr", "add", &p_ip, "dev", &p_if])?;
                run(&["ip", "-n", &ns, "link", "set", &p_if, "up"])?;
                run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
                run(&["ip", "-n", &ns, "route", "add", "default", "via", &gw])?;
            }
            Ok(())
        };
        setup(&mut lab).map_err(Unavailable)?;
        Ok(lab)
    }

    /// Adds one nftables rule on `hook` (input or output) inside PoP `i` (1-based).
    pub fn nft(&self, i: usize, hook: &str, rule: &str) -> Result<(), String> {
        let ns = &self.pops[i - 1];
        let script = format!(
            "table inet lab {{\n  chain {hook} {{\n    type filter hook {hook} priority 0;\n    {rule}\n  }}\n}}\n"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("piped stdin")
                    .write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .map_err(|e| format!("nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr)))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.pops.iter().chain(std::iter::once(&self.core)) {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) -> std::io::Result<()> {
    let file = File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `f` on a fresh thread inside `ns` and returns its result: sockets it creates live in
/// that namespace for good.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns).expect("enter namespace");
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// Runs `fut` on its own single-threaded runtime on a thread inside `ns`, so every socket it
/// opens (probes included) belongs to that namespace.
pub fn spawn_in_netns<F>(
    ns: &str,
    make: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<()>
where
    F: std::future::Future<Output = ()>,
{
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns).expect("enter namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(make());
    })
}

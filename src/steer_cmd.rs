//! `isobar explain`, `isobar whatif` and `isobar drain confirm`: ask the scheduler why a
//! client gets its answer, what a failure would do, and lift a held drain.

use clap::{Args, Subcommand};
use isobar_proto::v1::{
    ConfirmDrainRequest, ExplainRequest, ExplainWeight, Explanation, WhatIfRequest, WhatIfResult,
};
use serde_json::{Value, json};

use crate::cli::{ClientArgs, actor_name, admin_client, grpc_error};

/// `isobar explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The GSLB name, e.g. www.example.com.
    pub name: String,
    /// The client's (or its resolver's) address.
    #[arg(long)]
    pub client: String,
    /// EDNS Client Subnet the query carries, ADDRESS/PREFIX.
    #[arg(long)]
    pub ecs: Option<String>,
    /// HTTPDNS device ID.
    #[arg(long)]
    pub device: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Scheduler connection.
    #[command(flatten)]
    pub client_args: ClientArgs,
}

/// `isobar whatif`.
#[derive(Debug, Args)]
pub struct WhatIfArgs {
    /// A failure: pop=NAME, region=NAME or endpoint=ADDRESS (repeatable).
    #[arg(long = "fail", required = true)]
    pub fail: Vec<String>,
    /// Always list this client group (cell:N, group:NAME, unknown; repeatable), e.g. the
    /// label `isobar explain` shows for a client.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Scheduler connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `isobar drain ...`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DrainCommand,
}

/// Subcommands of `isobar drain`.
#[derive(Debug, Subcommand)]
pub enum DrainCommand {
    /// Lift a service's drain budget for one drain window (audited): PoPs held in rotation
    /// drain at the next solve.
    Confirm(ConfirmArgs),
}

/// `isobar drain confirm`.
#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// The service, e.g. www.example.com.
    pub service: String,
    /// Scheduler connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `isobar explain`.
pub async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let mut client = admin_client(&args.client_args).await?;
    let e = client
        .explain(ExplainRequest {
            name: args.name,
            client: args.client,
            ecs: args.ecs.unwrap_or_default(),
            device: args.device.unwrap_or_default(),
        })
        .await
        .map_err(grpc_error)?
        .into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explain_json(&e))?);
    } else {
        print!("{}", explain_text(&e));
    }
    Ok(())
}

/// Runs `isobar whatif`.
pub async fn what_if(args: WhatIfArgs) -> anyhow::Result<()> {
    let mut client = admin_client(&args.client).await?;
    let r = client
        .what_if(WhatIfRequest {
            fail: args.fail,
            groups: args.groups,
        })
        .await
        .map_err(grpc_error)?
        .into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&what_if_json(&r))?);
    } else {
        print!("{}", what_if_text(&r));
    }
    Ok(())
}

/// Runs `isobar drain`.
pub async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    match args.command {
        DrainCommand::Confirm(args) => {
            let mut client = admin_client(&args.client).await?;
            let r = client
                .confirm_drain(ConfirmDrainRequest {
                    service: args.service,
                    actor: actor_name(),
                })
                .await
                .map_err(grpc_error)?
                .into_inner();
            println!(
                "drain confirmed for {}: held PoPs drain at the next solve",
                r.service
            );
            Ok(())
        }
    }
}

fn weights_json(w: &[ExplainWeight]) -> Value {
    w.iter()
        .map(|w| json!({ "pop": w.pop, "weight": w.weight }))
        .collect()
}

fn weights_text(w: &[ExplainWeight]) -> String {
    if w.is_empty() {
        return "-".into();
    }
    w.iter()
        .map(|w| format!("{} {:.0}%", w.pop, w.weight * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The explanation as JSON (stable field names, for scripts).
pub fn explain_json(e: &Explanation) -> Value {
    let answer = e.answer.clone().unwrap_or_default();
    let group = e.group.clone().unwrap_or_default();
    let guard = e.guard.clone().unwrap_or_default();
    json!({
        "service": e.service,
        "snapshot_version": e.snapshot_version,
        "answer": {
            "ipv4": answer.ipv4, "ipv6": answer.ipv6, "pops": answer.pops,
            "ttl": answer.ttl, "ecs_scope": answer.ecs_scope,
        },
        "group": {
            "label": group.label, "decided_by": group.decided_by,
            "steering_address": group.steering_address,
            "location": group.located.then(|| json!({ "lat": group.lat, "lon": group.lon })),
            "prefix_len": group.prefix_len, "demand": group.demand,
            "asn": (group.asn != 0).then(|| json!({
                "number": group.asn,
                "organization": Some(&group.asn_organization).filter(|o| !o.is_empty()),
            })),
            "asn_db_missing": group.asn_db_missing,
        },
        "pops": e.pops.iter().map(|p| json!({
            "pop": p.pop, "cost": p.cost, "rtt_ms": p.rtt_ms, "loss_penalty": p.loss_penalty,
            "load_penalty": p.load_penalty, "client_report": p.client_report,
            "capacity": p.capacity, "load": p.load, "utilisation": p.utilisation,
            "state": p.state, "weight": p.weight,
        })).collect::<Vec<_>>(),
        "weights": weights_json(&e.weights),
        "gray": e.gray.as_ref().map(|g| json!({
            "rule": g.rule, "arm": g.arm, "share_percent": g.share_percent, "why": g.why,
        })),
        "guard": {
            "held": guard.held, "drained": guard.drained, "recovering": guard.recovering,
            "all_down": Some(guard.all_down).filter(|a| !a.is_empty()),
            "unserved_demand": guard.unserved_demand,
        },
    })
}

/// The explanation as a compact human table.
pub fn explain_text(e: &Explanation) -> String {
    use std::fmt::Write;
    let answer = e.answer.clone().unwrap_or_default();
    let group = e.group.clone().unwrap_or_default();
    let guard = e.guard.clone().unwrap_or_default();
    let mut out = String::new();
    let addrs: Vec<String> = answer.ipv4.iter().chain(&answer.ipv6).cloned().collect();
    let _ = writeln!(
        out,
        "{}  →  {}  (PoPs {}; ttl {}s, ECS scope /{}; snapshot {})",
        e.service,
        addrs.join(" "),
        answer.pops.join(" > "),
        answer.ttl,
        answer.ecs_scope,
        e.snapshot_version
    );
    let location = if group.located {
        format!(" at {:.2},{:.2}", group.lat, group.lon)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "client {}: group {} by {}{} (/{}), demand {:.1} q/s",
        group.steering_address,
        group.label,
        group.decided_by,
        location,
        group.prefix_len,
        group.demand
    );
    if group.asn != 0 {
        let _ = writeln!(
            out,
            "asn: AS{}{}",
            group.asn,
            if group.asn_organization.is_empty() {
                String::new()
            } else {
                format!(" ({})", group.asn_organization)
            }
        );
    }
    if group.asn_db_missing {
        let _ = writeln!(
            out,
            "asn: not checked: the snapshot has ASN client groups but this scheduler has no \
             ASN database (--asn-db); a frontend with one may answer from an ASN group"
        );
    }
    let _ = writeln!(out, "weights: {}", weights_text(&e.weights));
    match &e.gray {
        Some(g) => {
            let _ = writeln!(
                out,
                "gray: rule {} at {:.1}% → {} arm ({})",
                g.rule, g.share_percent, g.arm, g.why
            );
        }
        None => {
            let _ = writeln!(out, "gray: none");
        }
    }
    let list = |l: &[String]| {
        if l.is_empty() {
            "-".to_owned()
        } else {
            l.join(",")
        }
    };
    let _ = writeln!(
        out,
        "guard: held {}, drained {}, recovering {}, all-down {}, unserved {:.1} q/s",
        list(&guard.held),
        list(&guard.drained),
        list(&guard.recovering),
        if guard.all_down.is_empty() {
            "no"
        } else {
            &guard.all_down
        },
        guard.unserved_demand
    );
    let _ = writeln!(
        out,
        "{:<10} {:>8} {:>8} {:>6} {:>6} {:>4} {:>9} {:>9} {:>6} {:<10} {:>6}",
        "POP",
        "COST",
        "RTT_MS",
        "LOSS",
        "LOAD",
        "RUM",
        "CAPACITY",
        "LOAD_QPS",
        "UTIL",
        "STATE",
        "WEIGHT"
    );
    for p in &e.pops {
        let _ = writeln!(
            out,
            "{:<10} {:>8.1} {:>8.1} {:>6.1} {:>6.1} {:>4} {:>9} {:>9.1} {:>5.0}% {:<10} {:>5.0}%",
            p.pop,
            p.cost,
            p.rtt_ms,
            p.loss_penalty,
            p.load_penalty,
            if p.client_report { "yes" } else { "-" },
            p.capacity.map_or("∞".to_owned(), |c| format!("{c:.0}")),
            p.load,
            p.utilisation * 100.0,
            p.state,
            p.weight * 100.0
        );
    }
    out
}

/// The what-if result as JSON.
pub fn what_if_json(r: &WhatIfResult) -> Value {
    json!({
        "failed_pops": r.failed_pops,
        "failed_targets": r.failed_targets,
        "services": r.services.iter().map(|s| json!({
            "service": s.service,
            "overloaded": s.overloaded,
            "unserved_before": s.unserved_before,
            "unserved_after": s.unserved_after,
            "all_down": Some(&s.all_down).filter(|a| !a.is_empty()),
            "pops": s.pops.iter().map(|p| json!({
                "pop": p.pop, "capacity": p.capacity,
                "load_before": p.load_before, "load_after": p.load_after,
                "utilisation_before": p.utilisation_before,
                "utilisation_after": p.utilisation_after,
                "state_before": p.state_before, "state_after": p.state_after,
            })).collect::<Vec<_>>(),
            "groups": s.groups.iter().map(|g| json!({
                "group": g.group, "demand": g.demand,
                "before": weights_json(&g.before), "after": weights_json(&g.after),
            })).collect::<Vec<_>>(),
            "groups_omitted": s.groups_omitted,
        })).collect::<Vec<_>>(),
    })
}

/// The what-if result as compact human tables.
pub fn what_if_text(r: &WhatIfResult) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "failing PoPs: {}  ({} health targets down)",
        if r.failed_pops.is_empty() {
            "-".to_owned()
        } else {
            r.failed_pops.join(", ")
        },
        r.failed_targets.len()
    );
    for s in &r.services {
        let _ = writeln!(out, "\n{}", s.service);
        let _ = writeln!(
            out,
            "  {:<10} {:>9} {:>10} {:>10} {:>7} {:>7}  STATE",
            "POP", "CAPACITY", "LOAD_NOW", "LOAD_THEN", "UTIL", "→UTIL"
        );
        for p in &s.pops {
            let flag = if s.overloaded.contains(&p.pop) {
                "  OVERLOADED"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<10} {:>9} {:>10.1} {:>10.1} {:>6.0}% {:>6.0}%  {} → {}{}",
                p.pop,
                p.capacity.map_or("∞".to_owned(), |c| format!("{c:.0}")),
                p.load_before,
                p.load_after,
                p.utilisation_before * 100.0,
                p.utilisation_after * 100.0,
                p.state_before,
                p.state_after,
                flag
            );
        }
        let _ = writeln!(
            out,
            "  unserved {:.1} → {:.1} q/s; all-down policy: {}",
            s.unserved_before,
            s.unserved_after,
            if s.all_down.is_empty() {
                "not applied"
            } else {
                &s.all_down
            }
        );
        for g in &s.groups {
            let _ = writeln!(
                out,
                "  {:<18} {:>8.1} q/s  {}  →  {}",
                g.group,
                g.demand,
                weights_text(&g.before),
                weights_text(&g.after)
            );
        }
        if s.groups_omitted > 0 {
            let _ = writeln!(out, "  … {} more groups", s.groups_omitted);
        }
    }
    out
}

//! Unit tests of the health model.

use super::*;

fn settings() -> HealthSettings {
    HealthSettings {
        interval_ms: 500,
        timeout_ms: 400,
        fall: 3,
        rise: 2,
        ..HealthSettings::default()
    }
}

fn table(targets: &[&str]) -> HealthTable {
    HealthTable::new(settings(), targets.iter().map(|t| (*t).to_owned()), 0)
}

/// Feeds `n` results of one kind from `vantage` for `target`; returns the transitions.
fn feed(
    t: &mut HealthTable,
    vantage: &str,
    target: &str,
    ok: bool,
    n: usize,
    now: i64,
) -> Vec<Transition> {
    let mut out = Vec::new();
    for _ in 0..n {
        assert!(t.observe(vantage, target, ok, "connection refused", now, &mut out));
    }
    out
}

fn state(t: &HealthTable, target: &str) -> (State, String) {
    let r = &t.report(0)[target];
    (r.state, r.reason.clone())
}

#[test]
fn one_vantage_goes_down_after_fall_and_up_after_rise() {
    let mut t = table(&["x"]);
    assert_eq!(state(&t, "x").1, "no probe result yet");
    assert!(feed(&mut t, "fra1", "x", false, 2, 1).is_empty());
    let down = feed(&mut t, "fra1", "x", false, 1, 2);
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].to, State::Down);
    assert!(
        down[0]
            .reason
            .contains("3 consecutive failed probes, last: connection refused"),
        "{}",
        down[0].reason
    );
    assert!(t.down_set().contains("x"));
    assert!(feed(&mut t, "fra1", "x", true, 1, 3).is_empty());
    let up = feed(&mut t, "fra1", "x", true, 1, 4);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].to, State::Up);
    assert!(t.down_set().is_empty());
    let mut out = Vec::new();
    assert!(!t.observe("fra1", "unknown", false, "", 5, &mut out));
}

#[test]
fn a_success_resets_the_failure_count() {
    let mut t = table(&["x"]);
    feed(&mut t, "fra1", "x", false, 2, 1);
    feed(&mut t, "fra1", "x", true, 1, 2);
    feed(&mut t, "fra1", "x", false, 2, 3);
    assert!(t.down_set().is_empty());
}

#[test]
fn a_minority_of_vantages_cannot_take_a_target_down_but_a_majority_can() {
    let mut t = table(&["x", "y", "z"]);
    for v in ["fra1", "iad1", "sin1"] {
        for target in ["x", "y", "z"] {
            feed(&mut t, v, target, true, 1, 1);
        }
    }
    feed(&mut t, "sin1", "x", false, 3, 2);
    let (s, reason) = state(&t, "x");
    assert_eq!(s, State::Up);
    assert!(
        reason.contains("down from only 1 of 3 vantages"),
        "{reason}"
    );
    assert!(reason.contains("sin1"), "{reason}");
    let out = feed(&mut t, "iad1", "x", false, 3, 3);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].reason.starts_with("down from 2 of 3 vantages"),
        "{}",
        out[0].reason
    );
    assert_eq!(t.down_set(), BTreeSet::from(["x".to_owned()]));
    assert!(t.vantages().values().all(|v| !v.broken));
}

#[test]
fn an_explicit_quorum_counts_down_votes() {
    let mut s = settings();
    s.quorum = 1;
    let mut t = HealthTable::new(s, ["x".to_owned()], 0);
    feed(&mut t, "fra1", "x", true, 1, 1);
    feed(&mut t, "iad1", "x", true, 1, 1);
    feed(&mut t, "sin1", "x", false, 3, 1);
    assert_eq!(state(&t, "x").0, State::Down, "one down vote is quorum 1");
}

#[test]
fn a_vantage_that_loses_most_targets_is_set_aside() {
    let targets = ["a", "b", "c", "d"];
    let mut t = table(&targets);
    for v in ["fra1", "iad1", "sin1"] {
        for target in targets {
            feed(&mut t, v, target, true, 1, 1);
        }
    }
    // sin1's own network breaks: it sees everything down. Two other vantages agreeing would
    // be a majority of three, so its votes must be set aside before they count.
    for target in targets {
        feed(&mut t, "sin1", target, false, 3, 2);
    }
    assert!(t.vantages()["sin1"].broken);
    assert_eq!(t.counters().vantages_judged_broken, 1);
    // Even a second vantage seeing one target down does not reach the quorum now.
    feed(&mut t, "iad1", "a", false, 3, 3);
    assert!(t.down_set().is_empty(), "{:?}", t.report(3));
    assert!(
        state(&t, "a").1.contains("broken vantage(s) set aside"),
        "{}",
        state(&t, "a").1
    );
    // sin1 recovers: its votes count again.
    for target in targets {
        feed(&mut t, "sin1", target, true, 2, 4);
    }
    assert!(!t.vantages()["sin1"].broken);
}

#[test]
fn a_real_outage_seen_by_everyone_is_not_blamed_on_the_observers() {
    let targets = ["a", "b", "c"];
    let mut t = table(&targets);
    for v in ["fra1", "iad1", "sin1"] {
        for target in targets {
            feed(&mut t, v, target, true, 1, 1);
        }
        // Two of three targets really die: every vantage sees it.
        feed(&mut t, v, "a", false, 3, 2);
        feed(&mut t, v, "b", false, 3, 2);
    }
    assert!(t.vantages().values().all(|v| !v.broken));
    assert_eq!(
        t.down_set(),
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
}

#[test]
fn stale_votes_stop_counting_and_silence_keeps_state() {
    let mut t = table(&["x"]);
    feed(&mut t, "fra1", "x", false, 3, 0);
    feed(&mut t, "iad1", "x", false, 3, 0);
    feed(&mut t, "sin1", "x", true, 1, 0);
    assert_eq!(state(&t, "x").0, State::Down);
    // Nobody reports for a long time: silence is not evidence.
    assert!(t.tick(60_000).is_empty());
    assert_eq!(state(&t, "x").0, State::Down);
    // Only sin1 comes back and sees it up; the old down votes are stale.
    let out = feed(&mut t, "sin1", "x", true, 1, 60_000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, State::Up);
    assert_eq!(out[0].reason, "up from all 1 vantages");
}

#[test]
fn flapping_targets_are_held_down_until_stable() {
    let mut s = settings();
    s.fall = 1;
    s.rise = 1;
    s.flap_suppress = 3;
    s.flap_half_life_ms = 10_000;
    let mut t = HealthTable::new(s, ["x".to_owned()], 0);
    for i in 0..3 {
        feed(&mut t, "fra1", "x", false, 1, i * 100);
        feed(&mut t, "fra1", "x", true, 1, i * 100 + 50);
    }
    let r = &t.report(300)["x"];
    assert_eq!(r.state, State::Down, "{r:?}");
    assert_eq!(r.probe_state, State::Up);
    assert!(r.damped);
    assert!(r.reason.starts_with("flapping"), "{}", r.reason);
    // Three downs decay below the release point (a quarter of 2.5) after ~2.3 half-lives.
    assert!(t.tick(20_000).is_empty());
    let out = t.tick(24_000);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].to, State::Up);
    assert_eq!(out[0].class, ReasonClass::FlapDamping, "the damper let go");
    let c = t.counters().changes;
    // Three probe-driven downs, two probe-driven ups before suppression, one release.
    assert_eq!(c.get(State::Down, ReasonClass::Probes), 3);
    assert_eq!(c.get(State::Up, ReasonClass::Probes), 2);
    assert_eq!(c.get(State::Up, ReasonClass::FlapDamping), 1);
}

#[test]
fn overrides_beat_probes_and_clearing_restores_the_verdict() {
    let mut t = table(&["x"]);
    feed(&mut t, "fra1", "x", true, 1, 1);
    let ov = |mode| Override {
        mode,
        reason: "maintenance".into(),
        actor: "alice".into(),
        since_unix_ms: 2,
    };
    let tr = t
        .set_override("x", Some(ov(OverrideMode::Drain)), 2)
        .unwrap();
    let tr = tr.expect("drain takes it out");
    assert_eq!(tr.to, State::Down);
    assert_eq!(tr.reason, "override drain by alice: maintenance");
    feed(&mut t, "fra1", "x", false, 3, 3);
    assert!(
        t.set_override("x", Some(ov(OverrideMode::ForceUp)), 4)
            .unwrap()
            .is_some()
    );
    assert!(t.down_set().is_empty(), "force up beats a down verdict");
    let back = t
        .set_override("x", None, 5)
        .unwrap()
        .expect("verdict is down");
    assert_eq!(back.to, State::Down);
    assert_eq!(back.class, ReasonClass::Override, "the operator cleared it");
    assert!(
        back.reason.starts_with("down from 1 of 1"),
        "{}",
        back.reason
    );
    assert_eq!(
        t.set_override("nope", None, 6),
        Err(UnknownTarget("nope".into()))
    );
}

#[test]
fn reconfigure_keeps_known_state_and_drops_removed_targets() {
    let mut t = table(&["x"]);
    feed(&mut t, "fra1", "x", false, 3, 1);
    t.reconfigure(settings(), ["x".to_owned(), "y".to_owned()], 10);
    assert!(t.down_set().contains("x"));
    assert!(t.contains("y"));
    t.reconfigure(settings(), ["y".to_owned()], 11);
    assert!(!t.contains("x"));
    assert_eq!(t.vantages()["fra1"].targets, 0);
}

#[test]
fn metrics_show_each_target_state_changes_by_class_and_broken_vantages() {
    let targets = ["a", "b", "c", "d\"q"];
    let mut t = table(&targets);
    for v in ["fra1", "iad1", "sin1"] {
        for target in targets {
            feed(&mut t, v, target, true, 1, 1);
        }
    }
    for target in targets {
        feed(&mut t, "sin1", target, false, 3, 2);
    }
    feed(&mut t, "fra1", "a", false, 3, 3);
    feed(&mut t, "iad1", "a", false, 3, 3);
    let drain = Override {
        mode: OverrideMode::Drain,
        reason: "maintenance".into(),
        actor: "alice".into(),
        since_unix_ms: 4,
    };
    t.set_override("b", Some(drain), 4).unwrap();
    let text = t.render_prometheus();
    for line in [
        "isobar_health_target_up{target=\"a\",state=\"down\"} 0",
        "isobar_health_target_up{target=\"b\",state=\"drain\"} 0",
        "isobar_health_target_up{target=\"c\",state=\"up\"} 1",
        "isobar_health_target_up{target=\"d\\\"q\",state=\"up\"} 1",
        "isobar_health_target_last_change_timestamp_seconds{target=\"a\"} 0.003",
        "isobar_health_targets{state=\"up\"} 2",
        "isobar_health_targets{state=\"down\"} 2",
        "isobar_health_targets{state=\"overridden\"} 1",
        "isobar_health_state_changes_total{to=\"down\",reason=\"probes\"} 1",
        "isobar_health_state_changes_total{to=\"down\",reason=\"override\"} 1",
        "isobar_health_state_changes_total{to=\"up\",reason=\"flap_damping\"} 0",
        "isobar_health_vantage_broken{vantage=\"sin1\"} 1",
        "isobar_health_vantage_broken{vantage=\"fra1\"} 0",
        "isobar_health_vantages_broken 1",
        "isobar_health_vantages_judged_broken_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Every sample line belongs to a declared family.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let family = line.split(['{', ' ']).next().unwrap_or_default();
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "undeclared {family}"
        );
    }
}

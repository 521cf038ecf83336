//! The world as table rows and back: column types both backends share (i64, f64, text, bool).

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::world::{ClientGroup, Endpoint, Pop, Region, Service, World, Zone};

/// `settings` keys.
pub(crate) const SETTING_DEFAULTS: &str = "defaults";
pub(crate) const SETTING_HEALTH: &str = "health";
pub(crate) const SETTING_HTTPDNS: &str = "httpdns";
pub(crate) const SETTING_ACCOUNTS: &str = "httpdns_accounts";

pub(crate) type SettingRow = (String, String);
pub(crate) type RegionRow = (String, f64, f64);
/// name, region, lat, lon, capacity, replica_slots, labels, failure_domain.
pub(crate) type PopRow = (String, String, f64, f64, i64, i64, String, Option<String>);
/// zone, position, text.
pub(crate) type RecordRow = (String, i64, String);
/// name, ttl, answers, ecs, demand, steering, gray.
pub(crate) type ServiceRow = (
    String,
    Option<i64>,
    Option<i64>,
    bool,
    String,
    String,
    Option<String>,
);
/// service, pop, address, check_target, weight, labels, probe, capacity.
pub(crate) type EndpointRow = (
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    Option<String>,
    Option<f64>,
);
/// (name, cidrs JSON, region, declared demand, AS numbers JSON).
pub(crate) type ClientGroupRow = (String, String, String, Option<f64>, String);

/// Every row of the world tables.
#[derive(Debug, Default)]
pub(crate) struct WorldRows {
    pub(crate) settings: Vec<SettingRow>,
    pub(crate) regions: Vec<RegionRow>,
    pub(crate) pops: Vec<PopRow>,
    pub(crate) zones: Vec<String>,
    pub(crate) records: Vec<RecordRow>,
    pub(crate) services: Vec<ServiceRow>,
    pub(crate) endpoints: Vec<EndpointRow>,
    pub(crate) client_groups: Vec<ClientGroupRow>,
}

impl WorldRows {
    /// The rows that store `world`.
    pub(crate) fn from_world(world: &World) -> Result<Self, StoreError> {
        let mut rows = Self {
            settings: vec![
                (SETTING_DEFAULTS.into(), to_json(&world.defaults)?),
                (SETTING_HEALTH.into(), to_json(&world.health)?),
                (SETTING_HTTPDNS.into(), to_json(&world.httpdns)?),
                (SETTING_ACCOUNTS.into(), to_json(&world.accounts)?),
            ],
            ..Self::default()
        };
        for r in &world.regions {
            rows.regions.push((r.name.clone(), r.lat, r.lon));
        }
        for p in &world.pops {
            let capacity = i64::try_from(p.capacity).map_err(|_| StoreError::OutOfRange {
                field: "pop capacity",
                value: p.capacity.to_string(),
            })?;
            rows.pops.push((
                p.name.clone(),
                p.region.clone(),
                p.lat,
                p.lon,
                capacity,
                i64::from(p.replica_slots),
                to_json(&p.labels)?,
                p.failure_domain.clone(),
            ));
        }
        for z in &world.zones {
            rows.zones.push(z.name.clone());
            for (position, text) in (0_i64..).zip(&z.records) {
                rows.records.push((z.name.clone(), position, text.clone()));
            }
        }
        for s in &world.services {
            rows.services.push((
                s.name.clone(),
                s.ttl.map(i64::from),
                s.answers.map(i64::from),
                s.ecs,
                to_json(&s.demand)?,
                to_json(&s.steering)?,
                s.gray.as_ref().map(to_json).transpose()?,
            ));
            for e in &s.endpoints {
                rows.endpoints.push((
                    s.name.clone(),
                    e.pop.clone(),
                    e.address.clone(),
                    e.check.clone(),
                    i64::from(e.weight),
                    to_json(&e.labels)?,
                    e.probe.as_ref().map(to_json).transpose()?,
                    e.capacity,
                ));
            }
        }
        for g in &world.client_groups {
            rows.client_groups.push((
                g.name.clone(),
                to_json(&g.cidrs)?,
                g.region.clone(),
                g.demand,
                to_json(&g.asns)?,
            ));
        }
        Ok(rows)
    }

    /// The world these rows store, normalized.
    pub(crate) fn into_world(self) -> Result<World, StoreError> {
        let mut world = World::default();
        for (key, value) in &self.settings {
            match key.as_str() {
                SETTING_DEFAULTS => world.defaults = from_json("settings", value)?,
                SETTING_HEALTH => world.health = from_json("settings", value)?,
                SETTING_HTTPDNS => world.httpdns = from_json("settings", value)?,
                SETTING_ACCOUNTS => world.accounts = from_json("settings", value)?,
                // Settings written by a newer version are not ours to interpret.
                _ => {}
            }
        }
        world.regions = self
            .regions
            .into_iter()
            .map(|(name, lat, lon)| Region { name, lat, lon })
            .collect();
        for (name, region, lat, lon, capacity, slots, labels, failure_domain) in self.pops {
            world.pops.push(Pop {
                capacity: to_unsigned("pops", "capacity", capacity)?,
                replica_slots: to_unsigned("pops", "replica_slots", slots)?,
                labels: from_json("pops", &labels)?,
                failure_domain,
                name,
                region,
                lat,
                lon,
            });
        }
        let mut records: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for (zone, position, text) in self.records {
            records.entry(zone).or_default().push((position, text));
        }
        for name in self.zones {
            let mut lines = records.remove(&name).unwrap_or_default();
            lines.sort();
            world.zones.push(Zone {
                name,
                file: None,
                records: lines.into_iter().map(|(_, text)| text).collect(),
            });
        }
        let mut endpoints: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        for (service, pop, address, check, weight, labels, probe, capacity) in self.endpoints {
            endpoints.entry(service).or_default().push(Endpoint {
                pop,
                address,
                check,
                probe: probe.map(|p| from_json("endpoints", &p)).transpose()?,
                weight: to_unsigned("endpoints", "weight", weight)?,
                labels: from_json("endpoints", &labels)?,
                capacity,
            });
        }
        for (name, ttl, answers, ecs, demand, steering, gray) in self.services {
            world.services.push(Service {
                ttl: ttl.map(|t| to_unsigned("services", "ttl", t)).transpose()?,
                answers: answers
                    .map(|a| to_unsigned("services", "answers", a))
                    .transpose()?,
                ecs,
                demand: from_json("services", &demand)?,
                steering: from_json("services", &steering)?,
                gray: gray.map(|g| from_json("services", &g)).transpose()?,
                endpoints: endpoints.remove(&name).unwrap_or_default(),
                name,
            });
        }
        for (name, cidrs, region, demand, asns) in self.client_groups {
            world.client_groups.push(ClientGroup {
                cidrs: from_json("client_groups", &cidrs)?,
                asns: from_json("client_groups", &asns)?,
                name,
                region,
                demand,
            });
        }
        world.normalize();
        Ok(world)
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::OutOfRange {
        field: "json value",
        value: e.to_string(),
    })
}

fn from_json<T: DeserializeOwned>(table: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        table,
        message: format!("bad JSON {text:?}: {e}"),
    })
}

/// An unsigned integer column read back from an i64.
pub(crate) fn to_unsigned<T: TryFrom<i64>>(
    table: &'static str,
    column: &str,
    value: i64,
) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        message: format!("{column} {value} is out of range"),
    })
}

/// A u64 as an i64 column value.
pub(crate) fn to_signed(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange {
        field,
        value: value.to_string(),
    })
}

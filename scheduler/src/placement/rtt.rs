//! Where the solver's round-trip times come from: a small trait, so the distance model can
//! be swapped for measured network coordinates without touching the solver.

use isobar_proto::geo::distance_km;

/// Estimated round-trip time from a client location to a site.
pub trait RttModel: Sync {
    /// RTT in milliseconds from `client` (lat, lon) to the site `site` at `site_location`.
    fn rtt_ms(&self, client: (f64, f64), site: &str, site_location: (f64, f64)) -> f64;
}

/// RTT from great-circle distance: `base_ms + ms_per_km × km`.
///
/// Light in fibre covers about 200 km per millisecond, so a round trip costs 0.01 ms per km
/// of great-circle distance; real paths are longer than the great circle (a stretch of about
/// 1.5 is typical between well-connected metros), hence 0.015 ms/km. The 2 ms base stands
/// for access and serialisation delay. Frankfurt–London (640 km) comes out at about 12 ms,
/// Frankfurt–Ashburn (6 500 km) at about 100 ms, close to what public latency maps show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistanceRtt {
    /// Fixed part, milliseconds.
    pub base_ms: f64,
    /// Milliseconds per kilometre of great-circle distance.
    pub ms_per_km: f64,
}

impl Default for DistanceRtt {
    fn default() -> Self {
        Self {
            base_ms: 2.0,
            ms_per_km: 0.015,
        }
    }
}

impl RttModel for DistanceRtt {
    fn rtt_ms(&self, client: (f64, f64), _site: &str, site_location: (f64, f64)) -> f64 {
        self.base_ms + self.ms_per_km * distance_km(client, site_location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frankfurt_london_is_about_twelve_ms() {
        let rtt = DistanceRtt::default().rtt_ms((50.11, 8.68), "lon1", (51.51, -0.13));
        assert!((10.0..14.0).contains(&rtt), "{rtt}");
    }
}

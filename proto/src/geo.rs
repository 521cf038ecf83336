//! The geographic grid shared by the scheduler (which computes one answer per cell) and the
//! frontends (which map a client's GeoIP location to its cell).

/// Default cell size in degrees.
pub const DEFAULT_CELL_DEGREES: f64 = 5.0;

/// Number of cells along each axis and in total for a given cell size.
pub fn grid_dims(cell_degrees: f64) -> (u32, u32) {
    let rows = (180.0 / cell_degrees).ceil() as u32;
    let cols = (360.0 / cell_degrees).ceil() as u32;
    (rows, cols)
}

/// Total number of cells for a given cell size.
pub fn cell_count(cell_degrees: f64) -> usize {
    let (rows, cols) = grid_dims(cell_degrees);
    rows as usize * cols as usize
}

/// The cell a location falls in. Out-of-range coordinates are clamped.
pub fn cell_index(cell_degrees: f64, lat: f64, lon: f64) -> u32 {
    let (rows, cols) = grid_dims(cell_degrees);
    let row = (((lat + 90.0) / cell_degrees).floor().max(0.0) as u32).min(rows - 1);
    let col = (((lon + 180.0) / cell_degrees).floor().max(0.0) as u32).min(cols - 1);
    row * cols + col
}

/// The centre of a cell, as (lat, lon).
pub fn cell_center(cell_degrees: f64, cell: u32) -> (f64, f64) {
    let (_, cols) = grid_dims(cell_degrees);
    let row = cell / cols;
    let col = cell % cols;
    let lat = (-90.0 + (f64::from(row) + 0.5) * cell_degrees).min(90.0);
    let lon = (-180.0 + (f64::from(col) + 0.5) * cell_degrees).min(180.0);
    (lat, lon)
}

/// Great-circle distance in kilometres (haversine).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_round_trips_through_its_center() {
        let d = DEFAULT_CELL_DEGREES;
        for &(lat, lon) in &[
            (50.11, 8.68),
            (-33.9, 151.2),
            (89.99, 179.99),
            (-90.0, -180.0),
        ] {
            let cell = cell_index(d, lat, lon);
            assert!((cell as usize) < cell_count(d));
            let (clat, clon) = cell_center(d, cell);
            assert_eq!(cell_index(d, clat, clon), cell);
            assert!((clat - lat).abs() <= d && (clon - lon).abs() <= d);
        }
    }

    #[test]
    fn frankfurt_to_new_york_is_about_6200_km() {
        let km = distance_km((50.11, 8.68), (40.71, -74.01));
        assert!((6150.0..6250.0).contains(&km), "{km}");
    }
}

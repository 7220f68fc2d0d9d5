//! UTC timestamps for logs, from a `SystemTime` the caller passes in (no clock reads here).

use std::time::{SystemTime, UNIX_EPOCH};

/// The civil date (year, month, day) of a count of days since 1970-01-01.
// Spec: H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", civil_from_days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => (-(e.duration().as_secs() as i64), 0),
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400) as u64;
    (y, m, d, s / 3600, s / 60 % 60, s % 60, nanos)
}

/// RFC 3339 in UTC with seconds, like CloudTrail's `eventTime`: `2026-11-25T02:35:07Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The form AWS Client VPN connection logs use: `2026-11-25 02:35:07`.
pub fn log_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = parts(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_574_107);
        assert_eq!(rfc3339(t), "2026-11-25T02:35:07Z");
        assert_eq!(log_time(t), "2026-11-25 02:35:07");
    }

    proptest::proptest! {
        #[test]
        fn day_boundaries_are_monotonic(days in 0i64..200_000) {
            let (y0, m0, d0) = civil_from_days(days);
            let (y1, m1, d1) = civil_from_days(days + 1);
            proptest::prop_assert!((y1, m1, d1) > (y0, m0, d0));
            proptest::prop_assert!((1..=12).contains(&m1) && (1..=31).contains(&d1));
        }
    }
}

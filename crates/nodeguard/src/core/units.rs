//! Quantities shown to people: byte counts as `812K`, `41.3M`, `1.2G`.

/// `812K`, `41.3M`, `1.2G`.
pub fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let n = n as f64;
    if n < KIB * KIB {
        format!("{:.0}K", n / KIB)
    } else if n < KIB * KIB * KIB {
        format!("{:.1}M", n / (KIB * KIB))
    } else {
        format!("{:.1}G", n / (KIB * KIB * KIB))
    }
}

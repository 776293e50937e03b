//! Quantities read from and shown to people: sizes as `200M` or `1.5G` in, `812K`, `41.3M`, `1.2G` out.

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

/// `"200M"`, `"1.5G"`, `"512K"`, `"300MB"`, `"1024"` → bytes; 1024-based.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let multiplier: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    let bytes = (number * multiplier as f64).round();
    // In range (checked first), so the conversion is exact up to f64's own precision.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = bytes as u64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(whole)
}

/// Levenshtein distance, for "did you mean" hints (config fields, CLI verbs).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(current)
            };
            previous = current;
        }
    }
    row[b.len()]
}

/// `12345678` as `12,345,678`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

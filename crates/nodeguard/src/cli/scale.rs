//! `nodeguard scale <app> N|+N|-N`: the instance count as PM2 writes it.

use crate::config::MAX_INSTANCES;

/// How many instances `scale` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleCount {
    /// The count, or with `relative` the change to the current count.
    pub count: i64,
    pub relative: bool,
}

/// `4` (that many), `+2` (two more) or `-1` (one fewer); 0 and counts over [`MAX_INSTANCES`]
/// are refused here, relative counts that end out of range by the supervisor.
pub fn parse_scale(text: &str) -> Result<ScaleCount, String> {
    let relative = text.starts_with(['+', '-']);
    let digits = text.trim_start_matches(['+', '-']);
    let bad = || {
        format!(
            "'{text}' is not an instance count: write N (1 to {MAX_INSTANCES}), +N (more) or -N \
             (fewer)"
        )
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || text.len() - digits.len() > 1
    {
        return Err(bad());
    }
    let magnitude: u32 = match digits.parse() {
        Ok(n) if n <= MAX_INSTANCES => n,
        _ => {
            return Err(format!(
                "{text} instances is too many (at most {MAX_INSTANCES})"
            ))
        }
    };
    let count = if text.starts_with('-') {
        -i64::from(magnitude)
    } else {
        i64::from(magnitude)
    };
    if !relative && count == 0 {
        return Err(
            "an app runs at least 1 instance: to run none, `nodeguard stop <app>`".to_string(),
        );
    }
    Ok(ScaleCount { count, relative })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_absolute_or_relative_and_bounded() {
        let ok = |text| parse_scale(text).unwrap();
        assert_eq!(
            ok("4"),
            ScaleCount {
                count: 4,
                relative: false
            }
        );
        assert_eq!(
            ok("+2"),
            ScaleCount {
                count: 2,
                relative: true
            }
        );
        assert_eq!(
            ok("-1"),
            ScaleCount {
                count: -1,
                relative: true
            }
        );
        assert_eq!(
            ok("256"),
            ScaleCount {
                count: 256,
                relative: false
            }
        );
        for bad in [
            "0",
            "257",
            "99999999999999999999",
            "",
            "+",
            "-",
            "two",
            "1.5",
            "--1",
            "+-1",
            " 3",
            "3x",
        ] {
            assert!(parse_scale(bad).is_err(), "{bad:?}");
        }
    }
}

//! PM2's `log_date_format`: the moment/dayjs tokens PM2 users write (`YYYY-MM-DD HH:mm:ss Z`),
//! compiled once per app into pieces, then rendered per log line into a caller's buffer without
//! allocating.
//!
//! Supported: `YYYY YY MM M DD D HH H hh h mm m ss s SSS A a Z ZZ`, `[escaped text]` and `\x`.
//! Letters moment or dayjs would read as a token this module does not render (`MMM`, `dddd`,
//! `Do`, `X`, ...) are refused when the format is compiled, so a format never prints silently
//! wrong; other characters (`-`, `:`, `T`, spaces, ...) are copied as they are, as moment does.

/// A compiled `log_date_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    source: String,
    literals: String,
    /// Whether a piece is `SSS`.
    millis: bool,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Bytes `start..end` of the compiled literals (escapes already resolved).
    Literal(usize, usize),
    Year4,
    Year2,
    Month(Pad),
    Day(Pad),
    Hour24(Pad),
    Hour12(Pad),
    Minute(Pad),
    Second(Pad),
    Millis,
    MeridiemUpper,
    MeridiemLower,
    /// `+05:30` (`Z`) or `+0530` (`ZZ`).
    Offset {
        colon: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pad {
    /// `M`, `D`, `H`, ...: no leading zero.
    None,
    /// `MM`, `DD`, `HH`, ...: two digits.
    Two,
}

/// A moment in local time, broken down: what a format renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalTime {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
    /// Seconds east of UTC.
    pub offset_seconds: i32,
}

/// The tokens, for error messages.
pub const SUPPORTED: &str = "YYYY YY MM M DD D HH H hh h mm m ss s SSS A a Z ZZ, [text]";

/// Letters moment or dayjs read as (the start of) a token.
fn is_token_letter(c: char) -> bool {
    matches!(
        c,
        'Y' | 'M'
            | 'D'
            | 'd'
            | 'H'
            | 'h'
            | 'm'
            | 's'
            | 'S'
            | 'Z'
            | 'z'
            | 'a'
            | 'A'
            | 'X'
            | 'x'
            | 'Q'
            | 'W'
            | 'w'
            | 'E'
            | 'e'
            | 'k'
            | 'N'
            | 'y'
            | 'g'
            | 'G'
    )
}

impl DateFormat {
    /// Compiles `text`; an error is one line naming the token.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("log_date_format is empty".to_string());
        }
        if text.len() > 256 {
            return Err("log_date_format is longer than 256 bytes".to_string());
        }
        // Literals are kept in `literals`, pieces point into it.
        let mut literals = String::new();
        let mut pieces = Vec::new();
        let literal = |literals: &mut String, pieces: &mut Vec<Piece>, s: &str| {
            let start = literals.len();
            literals.push_str(s);
            match pieces.last_mut() {
                Some(Piece::Literal(_, end)) if *end == start => *end = literals.len(),
                _ => pieces.push(Piece::Literal(start, literals.len())),
            }
        };
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        while let Some(&c) = chars.get(at) {
            if c == '[' {
                let Some(close) = chars[at..].iter().position(|&c| c == ']') else {
                    return Err(format!(
                        "log_date_format {text:?}: '[' without its ']' (escaped text is written [like this])"
                    ));
                };
                let inner: String = chars[at + 1..at + close].iter().collect();
                literal(&mut literals, &mut pieces, &inner);
                at += close + 1;
                continue;
            }
            if c == '\\' {
                if let Some(&next) = chars.get(at + 1) {
                    literal(&mut literals, &mut pieces, next.encode_utf8(&mut [0; 4]));
                    at += 2;
                    continue;
                }
            }
            if !is_token_letter(c) {
                literal(&mut literals, &mut pieces, c.encode_utf8(&mut [0; 4]));
                at += 1;
                continue;
            }
            let run = chars[at..].iter().take_while(|&&x| x == c).count();
            let token: String = chars[at..at + run].iter().collect();
            let piece = match (c, run) {
                ('Y', 4) => Some(Piece::Year4),
                ('Y', 2) => Some(Piece::Year2),
                ('M', 1) => Some(Piece::Month(Pad::None)),
                ('M', 2) => Some(Piece::Month(Pad::Two)),
                ('D', 1) => Some(Piece::Day(Pad::None)),
                ('D', 2) => Some(Piece::Day(Pad::Two)),
                ('H', 1) => Some(Piece::Hour24(Pad::None)),
                ('H', 2) => Some(Piece::Hour24(Pad::Two)),
                ('h', 1) => Some(Piece::Hour12(Pad::None)),
                ('h', 2) => Some(Piece::Hour12(Pad::Two)),
                ('m', 1) => Some(Piece::Minute(Pad::None)),
                ('m', 2) => Some(Piece::Minute(Pad::Two)),
                ('s', 1) => Some(Piece::Second(Pad::None)),
                ('s', 2) => Some(Piece::Second(Pad::Two)),
                ('S', 3) => Some(Piece::Millis),
                ('A', 1) => Some(Piece::MeridiemUpper),
                ('a', 1) => Some(Piece::MeridiemLower),
                ('Z', 1) => Some(Piece::Offset { colon: true }),
                ('Z', 2) => Some(Piece::Offset { colon: false }),
                _ => None,
            };
            // `Do`, `Mo`, ... are moment's ordinals ("5th"), not a number and an `o`.
            let ordinal = chars.get(at + run) == Some(&'o');
            match piece {
                Some(piece) if !ordinal => pieces.push(piece),
                _ => {
                    let shown = if ordinal { format!("{token}o") } else { token };
                    return Err(format!(
                        "log_date_format {text:?}: unknown token '{shown}' (supported: {SUPPORTED})"
                    ));
                }
            }
            at += run;
        }
        Ok(Self {
            millis: pieces.contains(&Piece::Millis),
            source: text.to_string(),
            literals,
            pieces,
        })
    }

    /// The format as the user wrote it.
    pub fn text(&self) -> &str {
        &self.source
    }

    /// Whether rendering depends on the milliseconds (else one rendering serves a whole second).
    pub fn uses_millis(&self) -> bool {
        self.millis
    }

    /// Appends `time` as this format to `out`.
    pub fn render(&self, time: &LocalTime, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match *piece {
                Piece::Literal(start, end) => {
                    out.extend_from_slice(
                        self.literals.as_bytes().get(start..end).unwrap_or_default(),
                    );
                }
                Piece::Year4 => {
                    if (0..10_000).contains(&time.year) {
                        digits(out, time.year.unsigned_abs(), 4);
                    } else {
                        out.extend_from_slice(time.year.to_string().as_bytes());
                    }
                }
                Piece::Year2 => digits(out, time.year.rem_euclid(100).unsigned_abs(), 2),
                Piece::Month(pad) => padded(out, time.month, pad),
                Piece::Day(pad) => padded(out, time.day, pad),
                Piece::Hour24(pad) => padded(out, time.hour, pad),
                Piece::Hour12(pad) => {
                    let hour = match time.hour % 12 {
                        0 => 12,
                        hour => hour,
                    };
                    padded(out, hour, pad);
                }
                Piece::Minute(pad) => padded(out, time.minute, pad),
                Piece::Second(pad) => padded(out, time.second, pad),
                Piece::Millis => digits(out, time.millis.min(999), 3),
                Piece::MeridiemUpper => {
                    out.extend_from_slice(if time.hour < 12 { b"AM" } else { b"PM" });
                }
                Piece::MeridiemLower => {
                    out.extend_from_slice(if time.hour < 12 { b"am" } else { b"pm" });
                }
                Piece::Offset { colon } => {
                    out.push(if time.offset_seconds < 0 { b'-' } else { b'+' });
                    let minutes = time.offset_seconds.unsigned_abs() / 60;
                    digits(out, (minutes / 60).min(99), 2);
                    if colon {
                        out.push(b':');
                    }
                    digits(out, minutes % 60, 2);
                }
            }
        }
    }
}

fn padded(out: &mut Vec<u8>, value: u32, pad: Pad) {
    match pad {
        Pad::Two => digits(out, value, 2),
        Pad::None => digits(out, value, 1),
    }
}

/// `value` in decimal, at least `width` digits.
fn digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buffer = [b'0'; 10];
    let mut rest = value;
    let mut used = 0;
    while rest > 0 || used < width.max(1) {
        let at = buffer.len().saturating_sub(used + 1);
        if let Some(slot) = buffer.get_mut(at) {
            // The remainder of a division by 10 is a digit.
            *slot = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        }
        rest /= 10;
        used += 1;
        if used >= buffer.len() {
            break;
        }
    }
    out.extend_from_slice(&buffer[buffer.len() - used..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time() -> LocalTime {
        LocalTime {
            year: 2026,
            month: 1,
            day: 5,
            hour: 0,
            minute: 7,
            second: 9,
            millis: 42,
            offset_seconds: 5 * 3600 + 30 * 60,
        }
    }

    fn render(format: &str, time: &LocalTime) -> String {
        let mut out = Vec::new();
        DateFormat::parse(format).unwrap().render(time, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pm2_formats_render_as_moment_does() {
        let t = time();
        assert_eq!(
            render("YYYY-MM-DD HH:mm:ss Z", &t),
            "2026-01-05 00:07:09 +05:30"
        );
        assert_eq!(render("YYYY-MM-DD HH:mm Z", &t), "2026-01-05 00:07 +05:30");
        assert_eq!(
            render("DD/MM/YYYY HH:mm:ss.SSS", &t),
            "05/01/2026 00:07:09.042"
        );
        assert_eq!(render("YYYY-MM-DDTHH:mm:ss", &t), "2026-01-05T00:07:09");
        assert_eq!(render("YY M D H m s", &t), "26 1 5 0 7 9");
        assert_eq!(render("hh:mm A h a ZZ", &t), "12:07 AM 12 am +0530");
        let pm = LocalTime {
            hour: 15,
            offset_seconds: -(3 * 3600 + 30 * 60),
            ..t
        };
        assert_eq!(render("hh h A a Z ZZ", &pm), "03 3 PM pm -03:30 -0330");
        assert_eq!(render("[at] YYYY [Day] D \\Y", &t), "at 2026 Day 5 Y");
    }

    #[test]
    fn unknown_tokens_are_refused_with_one_line() {
        for (format, token) in [
            ("YYYY-MMM-DD", "'MMM'"),
            ("dddd HH:mm", "'dddd'"),
            ("Do MMMM", "'Do'"),
            ("X", "'X'"),
            ("YYY", "'YYY'"),
            ("HH:mm:ss.SS", "'SS'"),
            ("yyyy-MM-dd", "'yyyy'"),
        ] {
            let error = DateFormat::parse(format).unwrap_err();
            assert!(error.contains(token), "{format}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
        assert!(DateFormat::parse("[open").is_err());
        assert!(DateFormat::parse("  ").is_err());
    }

    #[test]
    fn millis_use_is_known() {
        assert!(DateFormat::parse("ss.SSS").unwrap().uses_millis());
        assert!(!DateFormat::parse("ss").unwrap().uses_millis());
    }
}

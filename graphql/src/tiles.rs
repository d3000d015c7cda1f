//! C2SP tlog-tiles paths: `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, where N is
//! written in groups of three digits, every group but the last prefixed with `x`.

/// A parsed tile request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePath {
    /// `None` for an entry bundle, else the hash tile level.
    pub level: Option<u8>,
    /// Tile index.
    pub index: u64,
    /// Width of a partial tile (1..=255), `None` for a full tile.
    pub width: Option<u16>,
}

impl TilePath {
    /// Parses the part of the path after `tile/`. Only the canonical encoding is accepted.
    pub fn parse(rest: &str) -> Result<TilePath, String> {
        let mut parts: Vec<&str> = rest.split('/').collect();
        if parts.len() < 2 {
            return Err("expected tile/<L>/<N> or tile/entries/<N>".into());
        }
        let first = parts.remove(0);
        let level = if first == "entries" {
            None
        } else {
            Some(parse_level(first)?)
        };
        let mut width = None;
        if parts.len() >= 2 {
            if let Some(last) = parts.last() {
                if parts
                    .get(parts.len() - 2)
                    .is_some_and(|p| p.ends_with(".p"))
                {
                    width = Some(parse_width(last)?);
                    parts.pop();
                }
            }
        }
        let n = parts.len();
        let mut index: u64 = 0;
        for (i, part) in parts.iter().enumerate() {
            let is_last = i + 1 == n;
            let digits = if is_last {
                let p = if width.is_some() {
                    part.strip_suffix(".p")
                        .ok_or("a partial tile ends in .p/<W>")?
                } else {
                    part
                };
                p
            } else {
                part.strip_prefix('x').ok_or_else(|| {
                    format!("path element {part:?} must be x followed by three digits")
                })?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "path element {part:?} must hold exactly three digits"
                ));
            }
            let group: u64 = digits
                .parse()
                .map_err(|_| format!("bad digits {digits:?}"))?;
            index = index
                .checked_mul(1000)
                .and_then(|x| x.checked_add(group))
                .ok_or("tile index overflows 64 bits")?;
        }
        if n > 1 && parts.first().is_some_and(|p| *p == "x000") {
            return Err("tile index has a leading x000 group".into());
        }
        Ok(TilePath {
            level,
            index,
            width,
        })
    }
}

/// Encodes a tile index the tlog-tiles way (`1234067` → `x001/x234/067`).
pub fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn parse_level(s: &str) -> Result<u8, String> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    match s.parse::<u8>() {
        Ok(l) if ok && l < 8 => Ok(l),
        _ => Err(format!("tile level {s:?} must be a number from 0 to 7")),
    }
}

fn parse_width(s: &str) -> Result<u16, String> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    match s.parse::<u16>() {
        Ok(w) if ok && (1..=255).contains(&w) => Ok(w),
        _ => Err(format!(
            "partial tile width {s:?} must be a number from 1 to 255"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples_round_trip() {
        assert_eq!(encode_index(1234067), "x001/x234/067");
        assert_eq!(encode_index(5), "005");
        assert_eq!(encode_index(1000), "x001/000");
        let p = TilePath::parse("0/x001/x234/067.p/8");
        assert_eq!(
            p,
            Ok(TilePath {
                level: Some(0),
                index: 1234067,
                width: Some(8)
            })
        );
        let p = TilePath::parse("entries/005");
        assert_eq!(
            p,
            Ok(TilePath {
                level: None,
                index: 5,
                width: None
            })
        );
        for n in [0u64, 1, 999, 1000, 1001, 999_999, 1_000_000, u64::MAX / 256] {
            let path = format!("2/{}", encode_index(n));
            assert_eq!(TilePath::parse(&path).map(|p| p.index), Ok(n), "{path}");
        }
    }

    #[test]
    fn non_canonical_paths_are_refused() {
        for bad in [
            "0/5",
            "0/0005",
            "0/x5/000",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/08",
            "8/000",
            "01/000",
            "0/x000/001",
            "0/001/002",
            "entries",
            "0/000.p",
            "a/000",
        ] {
            assert!(TilePath::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}

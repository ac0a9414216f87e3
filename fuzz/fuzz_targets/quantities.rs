//! The Kubernetes quantity parser behind `cpu`, `memory` and `pvc.storage`, on any string,
//! against an exact reference in big rationals: whatever is accepted has the exact value the
//! reference computes, and whatever the reference says is a whole, positive value that fits is
//! accepted, except beyond the parser's documented limits (30 significant digits, exponents of
//! at most 4 digits and at most 40).
#![no_main]

use berth_core::ErrorCode;
use berth_core::model::{ByteQuantity, CpuLimit, memory_limit};
use libfuzzer_sys::fuzz_target;
use num_bigint::BigUint;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let reference = Reference::parse(s);

    let cpu = CpuLimit::new(s);
    if let Ok(cpu) = &cpu {
        assert_eq!(cpu.as_str(), s);
        assert!(cpu.millicores() > 0);
    }
    check(
        s,
        "cpu",
        &reference,
        1000,
        cpu.as_ref().ok().map(CpuLimit::millicores),
    );

    let memory = memory_limit(s);
    match &memory {
        Ok(m) => {
            assert_eq!(m.as_str(), s);
            assert!(m.bytes() > 0);
        }
        Err(e) => assert_eq!(e.code, ErrorCode::SandboxInvalidParameter),
    }
    check(
        s,
        "memory",
        &reference,
        1,
        memory.as_ref().ok().map(ByteQuantity::bytes),
    );

    // Same grammar and arithmetic for a claim's size; only the error code differs.
    let storage = ByteQuantity::new(s, "storage", ErrorCode::VolumeInvalidPvcStorage);
    match (&storage, &memory) {
        (Ok(a), Ok(b)) => assert_eq!(a.bytes(), b.bytes()),
        (Err(e), Err(_)) => assert_eq!(e.code, ErrorCode::VolumeInvalidPvcStorage),
        _ => panic!("memory and storage disagree on {s:?}: {memory:?} / {storage:?}"),
    }
});

/// Compares the parser's answer for `s` (`parsed`, the value × `scale`) with the reference's.
fn check(s: &str, what: &str, reference: &Option<Reference>, scale: u32, parsed: Option<u64>) {
    let Some(reference) = reference else {
        assert_eq!(
            parsed, None,
            "{what} {s:?} is not a quantity, yet was accepted"
        );
        return;
    };
    let expected = reference.whole_value(scale);
    match parsed {
        Some(value) => assert_eq!(
            Some(BigUint::from(value)),
            expected,
            "{what} {s:?} accepted with the wrong value"
        ),
        None => {
            let fits = expected
                .as_ref()
                .is_some_and(|v| *v > BigUint::ZERO && *v <= BigUint::from(u64::MAX));
            assert!(
                !fits || reference.beyond_documented_limits(),
                "{what} {s:?} was refused, yet it is exactly {} units of 1/{scale}",
                expected.unwrap_or_default()
            );
        }
    }
}

/// A quantity parsed by the grammar of `resource.Quantity`, as an exact rational.
#[derive(Debug)]
struct Reference {
    negative: bool,
    /// Every digit of the number, the `.` left out.
    digits: BigUint,
    /// Digits after the `.`.
    fraction_digits: u32,
    /// Significant digits, counted as the parser documents: from the first non-zero one.
    significant_digits: usize,
    /// Base 1024 exponent (`Ki` = 1 … `Ei` = 6).
    binary: u32,
    /// Base 10 exponent (suffix or explicit).
    decimal: i64,
    /// Digits of an explicit exponent, if any.
    exponent_digits: usize,
}

impl Reference {
    /// `sign? (digits | digits '.' digits? | '.' digits) suffix`.
    fn parse(s: &str) -> Option<Self> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = rest.split_at(int_len);
        let (frac_part, suffix) = match rest.strip_prefix('.') {
            Some(after) => {
                let n = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let all_digits = format!("{int_part}{frac_part}");
        let significant_digits = all_digits.trim_start_matches('0').len();
        let digits = BigUint::parse_bytes(all_digits.as_bytes(), 10)?;
        let (binary, decimal, exponent_digits) = match suffix {
            "" => (0, 0, 0),
            "m" => (0, -3, 0),
            "k" => (0, 3, 0),
            "M" => (0, 6, 0),
            "G" => (0, 9, 0),
            "T" => (0, 12, 0),
            "P" => (0, 15, 0),
            "E" => (0, 18, 0),
            "Ki" => (1, 0, 0),
            "Mi" => (2, 0, 0),
            "Gi" => (3, 0, 0),
            "Ti" => (4, 0, 0),
            "Pi" => (5, 0, 0),
            "Ei" => (6, 0, 0),
            other => {
                let exponent = other.strip_prefix(['e', 'E'])?;
                let (sign, magnitude) = match exponent.as_bytes().first() {
                    Some(b'-') => (-1, &exponent[1..]),
                    Some(b'+') => (1, &exponent[1..]),
                    _ => (1, exponent),
                };
                if magnitude.is_empty() || !magnitude.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                // Only its size matters beyond 18 digits: past the documented limits anyway.
                let value = magnitude.trim_start_matches('0').parse::<i64>().unwrap_or(
                    if magnitude.trim_start_matches('0').is_empty() {
                        0
                    } else {
                        i64::MAX
                    },
                );
                (0, sign * value, magnitude.len())
            }
        };
        Some(Self {
            negative,
            digits,
            fraction_digits: u32::try_from(frac_part.len()).ok()?,
            significant_digits,
            binary,
            decimal,
            exponent_digits,
        })
    }

    /// The value × `scale`, if it is a whole number (negative non-zero values are not).
    fn whole_value(&self, scale: u32) -> Option<BigUint> {
        if self.negative && self.digits != BigUint::ZERO {
            return None;
        }
        if self.digits == BigUint::ZERO {
            return Some(BigUint::ZERO);
        }
        let ten = BigUint::from(10u32);
        let mut numerator = &self.digits * BigUint::from(1024u32).pow(self.binary) * scale;
        let mut denominator = ten.pow(self.fraction_digits);
        let exponent = u32::try_from(self.decimal.unsigned_abs()).ok()?;
        if exponent > 10_000 {
            // Far past anything a u64 holds or a whole number allows; not computed.
            return None;
        }
        if self.decimal >= 0 {
            numerator *= ten.pow(exponent);
        } else {
            denominator *= ten.pow(exponent);
        }
        (&numerator % &denominator == BigUint::ZERO).then(|| numerator / denominator)
    }

    /// Whether the parser may refuse this quantity for its size alone, as it documents.
    fn beyond_documented_limits(&self) -> bool {
        self.significant_digits > 30 || self.exponent_digits > 4 || self.decimal.abs() > 40
    }
}

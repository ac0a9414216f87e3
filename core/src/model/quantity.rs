//! Kubernetes resource quantities (`500m`, `2`, `512Mi`, `1G`, `1e3`), parsed exactly — no
//! floating point — into whole millicores or whole bytes.
//!
//! Grammar (k8s.io/apimachinery `resource.Quantity`):
//! `quantity = sign? (digits | digits '.' digits? | '.' digits) suffix`,
//! `suffix = Ki|Mi|Gi|Ti|Pi|Ei | m|""|k|M|G|T|P|E | (e|E) sign? digits`.

use super::invalid::{InvalidValue, quoted};
use crate::error_code::ErrorCode;

/// The multiplier a suffix stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multiplier {
    /// 1024 to this power (`Ki` = 1 ... `Ei` = 6).
    Binary(u32),
    /// 10 to this power (`m` = -3, none = 0, `k` = 3 ... `E` = 18, or an explicit exponent).
    Decimal(i32),
}

/// A syntactically valid, non-negative quantity: `mantissa × 10^-fraction_digits × multiplier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quantity {
    mantissa: u128,
    fraction_digits: u32,
    multiplier: Multiplier,
}

/// Why a quantity was refused; rendered by the caller with the field's own wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuantityError {
    Syntax,
    Negative,
    TooLarge,
}

/// At most this many significant digits; more cannot fit the `u64` results anyway.
const MAX_DIGITS: usize = 30;
/// Explicit exponents beyond this cannot give a `u64` result or a non-zero one.
const MAX_EXPONENT: i32 = 40;

fn parse(s: &str) -> Result<Quantity, QuantityError> {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = unsigned
        .bytes()
        .position(|c| !(c.is_ascii_digit() || c == b'.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(QuantityError::Syntax);
    }
    let mut mantissa: u128 = 0;
    let mut significant_digits = 0usize;
    for digit in int_part.bytes().chain(frac_part.bytes()) {
        if mantissa != 0 || digit != b'0' {
            significant_digits += 1;
        }
        if significant_digits > MAX_DIGITS {
            return Err(QuantityError::TooLarge);
        }
        mantissa = mantissa * 10 + u128::from(digit - b'0');
    }
    let multiplier = match suffix {
        "" => Multiplier::Decimal(0),
        "m" => Multiplier::Decimal(-3),
        "k" => Multiplier::Decimal(3),
        "M" => Multiplier::Decimal(6),
        "G" => Multiplier::Decimal(9),
        "T" => Multiplier::Decimal(12),
        "P" => Multiplier::Decimal(15),
        "E" => Multiplier::Decimal(18),
        "Ki" => Multiplier::Binary(1),
        "Mi" => Multiplier::Binary(2),
        "Gi" => Multiplier::Binary(3),
        "Ti" => Multiplier::Binary(4),
        "Pi" => Multiplier::Binary(5),
        "Ei" => Multiplier::Binary(6),
        other => {
            let exponent = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or(QuantityError::Syntax)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || digits.len() > 4
            {
                return Err(QuantityError::Syntax);
            }
            let value: i32 = exponent.parse().map_err(|_| QuantityError::Syntax)?;
            if value.abs() > MAX_EXPONENT {
                return Err(QuantityError::TooLarge);
            }
            Multiplier::Decimal(value)
        }
    };
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative);
    }
    Ok(Quantity {
        mantissa,
        fraction_digits: u32::try_from(frac_part.len()).map_err(|_| QuantityError::TooLarge)?,
        multiplier,
    })
}

impl Quantity {
    /// The value × 10^`scale` as a whole number: `Ok(None)` when it is not whole.
    ///
    /// Exact: the value is `mantissa × 2^twos × 10^tens`. When `tens` is negative the divisor
    /// `10^-tens = 2^-tens × 5^-tens` first gives up the twos it shares with a binary suffix, and
    /// the mantissa is divided before anything is multiplied, so that an intermediate product
    /// never overflows for a result that fits (`0.000000000931322574615478515625Ei` is 1 GiB).
    fn scaled(self, scale: i32) -> Result<Option<u64>, QuantityError> {
        if self.mantissa == 0 {
            return Ok(Some(0));
        }
        let (twos, decimal_exponent) = match self.multiplier {
            Multiplier::Binary(power) => (10 * power, 0),
            Multiplier::Decimal(e) => (0, i64::from(e)),
        };
        let tens = decimal_exponent + i64::from(scale) - i64::from(self.fraction_digits);
        // A factor beyond u128 makes a result beyond u64: too large.
        let grow = |value: u128, base: u128, exponent: u32| {
            base.checked_pow(exponent)
                .and_then(|factor| value.checked_mul(factor))
                .ok_or(QuantityError::TooLarge)
        };
        let (quotient, twos_left) = if tens >= 0 {
            let tens = u32::try_from(tens).map_err(|_| QuantityError::TooLarge)?;
            (grow(self.mantissa, 10, tens)?, twos)
        } else {
            let fives = u32::try_from(-tens).unwrap_or(u32::MAX);
            let shared = fives.min(twos);
            // A divisor beyond u128 exceeds any non-zero mantissa: not a whole number.
            let divisor = 2u128
                .checked_pow(fives - shared)
                .zip(5u128.checked_pow(fives))
                .and_then(|(a, b)| a.checked_mul(b));
            match divisor {
                Some(d) if self.mantissa.is_multiple_of(d) => (self.mantissa / d, twos - shared),
                _ => return Ok(None),
            }
        };
        let whole = grow(quotient, 2, twos_left)?;
        u64::try_from(whole)
            .map(Some)
            .map_err(|_| QuantityError::TooLarge)
    }
}

fn grammar_error(field: &str, s: &str, error: QuantityError, example: &str) -> InvalidValue {
    let why = match error {
        QuantityError::Syntax => format!("is not a Kubernetes quantity (e.g. {example})"),
        QuantityError::Negative => "must not be negative".to_owned(),
        QuantityError::TooLarge => "is too large".to_owned(),
    };
    InvalidValue::new(
        ErrorCode::SandboxInvalidParameter,
        format!("{field} {} {why}", quoted(s)),
    )
}

/// A CPU limit in whole millicores (`500m` = 500, `2` = 2000), greater than zero, with the
/// spelling the user gave (so it is echoed and rendered as written).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuLimit {
    millicores: u64,
    spelling: String,
}

impl CpuLimit {
    /// Parses a CPU quantity.
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        let q = parse(s).map_err(|e| grammar_error("cpu", s, e, "\"500m\" or \"2\""))?;
        match q.scaled(3) {
            Ok(Some(0)) => Err(InvalidValue::new(
                ErrorCode::SandboxInvalidParameter,
                format!("cpu {} must be greater than zero", quoted(s)),
            )),
            Ok(Some(millicores)) => Ok(Self {
                millicores,
                spelling: s.to_owned(),
            }),
            Ok(None) => Err(InvalidValue::new(
                ErrorCode::SandboxInvalidParameter,
                format!("cpu {} is finer than one millicore (1m)", quoted(s)),
            )),
            Err(e) => Err(grammar_error("cpu", s, e, "\"500m\" or \"2\"")),
        }
    }

    /// Whole millicores.
    pub fn millicores(&self) -> u64 {
        self.millicores
    }

    /// Nano-CPUs, as Docker's `NanoCpus` wants them.
    pub fn nano_cpus(&self) -> u64 {
        self.millicores.saturating_mul(1_000_000)
    }

    /// The quantity as the user spelled it.
    pub fn as_str(&self) -> &str {
        &self.spelling
    }
}

/// A byte count (memory limit, claim size), whole and greater than zero, with the spelling the
/// user gave.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteQuantity {
    bytes: u64,
    spelling: String,
}

impl ByteQuantity {
    /// Parses a byte quantity for the field named `field` (used in messages), reporting `code`.
    pub fn new(s: &str, field: &str, code: ErrorCode) -> Result<Self, InvalidValue> {
        let with_code = |mut e: InvalidValue| {
            e.code = code;
            e
        };
        let q =
            parse(s).map_err(|e| with_code(grammar_error(field, s, e, "\"512Mi\" or \"1G\"")))?;
        match q.scaled(0) {
            Ok(Some(0)) => Err(InvalidValue::new(
                code,
                format!("{field} {} must be greater than zero", quoted(s)),
            )),
            Ok(Some(bytes)) => Ok(Self {
                bytes,
                spelling: s.to_owned(),
            }),
            Ok(None) if q.multiplier == Multiplier::Decimal(-3) => {
                let number = s.trim_end_matches('m');
                Err(InvalidValue::new(
                    code,
                    format!(
                        "{field} {} means milli-bytes ('m' is 1/1000); did you mean \"{number}Mi\" (mebibytes) or \"{number}M\" (megabytes)?",
                        quoted(s)
                    ),
                ))
            }
            Ok(None) => Err(InvalidValue::new(
                code,
                format!("{field} {} is not a whole number of bytes", quoted(s)),
            )),
            Err(e) => Err(with_code(grammar_error(field, s, e, "\"512Mi\" or \"1G\""))),
        }
    }

    /// The number of bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The quantity as the user spelled it.
    pub fn as_str(&self) -> &str {
        &self.spelling
    }
}

/// Parses a memory limit.
pub fn memory_limit(s: &str) -> Result<ByteQuantity, InvalidValue> {
    ByteQuantity::new(s, "memory", ErrorCode::SandboxInvalidParameter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_values() {
        let cases = [
            ("500m", 500),
            ("2", 2000),
            ("0.5", 500),
            (".5", 500),
            ("1.", 1000),
            ("+1", 1000),
            ("1e3", 1_000_000),
            ("1k", 1_000_000),
            ("0.001", 1),
            ("1500m", 1500),
        ];
        for (s, millis) in cases {
            assert_eq!(CpuLimit::new(s).map(|c| c.millicores()), Ok(millis), "{s}");
        }
        for bad in [
            "", "m", "1.2.3", "-1", "0", "0m", "0.0001", "1 ", " 1", "1u", "1Ki5", "1e", "1e+",
            "abc", "1e99999",
        ] {
            assert!(CpuLimit::new(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(CpuLimit::new("0.5").unwrap().as_str(), "0.5");
        assert_eq!(CpuLimit::new("2").unwrap().nano_cpus(), 2_000_000_000);
    }

    #[test]
    fn memory_values() {
        let cases = [
            ("512Mi", 512 << 20),
            ("1G", 1_000_000_000),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 123 << 20),
            ("1Ei", 1 << 60),
            ("8000m", 8),
        ];
        for (s, bytes) in cases {
            assert_eq!(memory_limit(s).map(|b| b.bytes()), Ok(bytes), "{s}");
        }
        for bad in ["512m", "0", "0.5", "-1Gi", "1Zi", "16Ei", "1e-1", "Mi"] {
            assert!(memory_limit(bad).is_err(), "{bad} was accepted");
        }
        let err = memory_limit("512m").unwrap_err();
        assert!(err.reason.contains("512Mi"), "{}", err.reason);
        let storage = ByteQuantity::new("1536Mi", "s", ErrorCode::VolumeInvalidPvcStorage).unwrap();
        assert_eq!((storage.bytes(), storage.as_str()), (1536 << 20, "1536Mi"));
    }

    /// Found by the `quantities` fuzz target (kept as `fuzz/seeds/quantities/fraction-times-binary-suffix`): a long fraction
    /// times a binary suffix overflowed u128 before the division, and a quantity that is a whole
    /// number of bytes well within u64 was refused as too large.
    #[test]
    fn long_fractions_with_binary_suffixes_are_exact() {
        let cases = [
            ("1.000000000000000000000Ei", 1 << 60),
            ("0.000000000931322574615478515625Ei", 1 << 30),
            ("0.0009765625Ki", 1),
            ("15.9375000000000000000000000Ei", 255 << 56),
            ("1.00000000000000000000000Ki", 1024),
        ];
        for (s, bytes) in cases {
            assert_eq!(memory_limit(s).map(|b| b.bytes()), Ok(bytes), "{s}");
        }
        for (bad, why) in [
            ("0.0009765624Ki", "is not a whole"),
            ("16.000000000000000000000Ei", "too large"),
            ("0.00000000000000000000000000001Ei", "is not a whole"),
        ] {
            let err = memory_limit(bad).unwrap_err();
            assert!(err.reason.contains(why), "{bad}: {}", err.reason);
        }
        assert_eq!(
            CpuLimit::new("0.0009765625Ki").map(|c| c.millicores()),
            Ok(1000)
        );
    }
}

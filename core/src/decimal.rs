//! Exact decimal parsing and arithmetic for quantities and prices.
//!
//! Property values arrive as JSON strings or numbers; both are parsed from their text, never through
//! a float. A value that does not fit `Decimal` exactly (more than 28 significant digits) is refused
//! rather than rounded.
//!
//! `rust_decimal`'s `checked_add`/`checked_mul` return `None` only when the *integer part* leaves the
//! range; when a result needs more than 96 bits of mantissa or 28 decimal places they silently round
//! it (`Decimal::MAX + -94.72` gives `...240`, not `...240.28`). [`add_exact`], [`sub_exact`] and
//! [`mul_exact`] return `None` instead, so usage totals and invoice amounts are exact or refused.

use rust_decimal::Decimal;

/// Parses plain (`-12.50`) or scientific (`1.5e3`) decimal text exactly. `None` when the text is not
/// a number or cannot be represented without loss.
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    // rust_decimal tolerates `_` separators; a billing quantity should not.
    if s.is_empty() || s.len() > 64 || s.contains('_') {
        return None;
    }
    match s.split_once(['e', 'E']) {
        Some((digits, exponent)) => scale_by_power_of_ten(
            Decimal::from_str_exact(digits).ok()?,
            exponent.parse().ok()?,
        ),
        None => Decimal::from_str_exact(s).ok(),
    }
}

/// `d * 10^exponent`, normalised, or `None` when that is not exactly representable.
/// (`Decimal::from_scientific` rounds instead: `654557000.11111111111155555555555555555E-7`.)
fn scale_by_power_of_ten(d: Decimal, exponent: i64) -> Option<Decimal> {
    let d = d.normalize();
    if d.is_zero() {
        return Some(Decimal::ZERO);
    }
    from_exact(d.mantissa(), i64::from(d.scale()).checked_sub(exponent)?)
}

/// Largest mantissa a `Decimal` holds: 2^96 - 1.
const MAX_MANTISSA: u128 = (1 << 96) - 1;

/// `a + b`, or `None` when the exact sum is not representable (out of range, or it would need
/// rounding to fit 96 bits of mantissa).
pub fn add_exact(a: Decimal, b: Decimal) -> Option<Decimal> {
    let sum = a.checked_add(b)?;
    // rust_decimal adds at the larger scale and only drops digits (rounding) when the result
    // overflows the mantissa, so a result that kept that scale is exact.
    if sum.scale() >= a.scale().max(b.scale()) {
        return Some(sum);
    }
    (exact_sum(a, b)? == sum).then_some(sum)
}

/// `a - b`, exact or `None`; see [`add_exact`].
pub fn sub_exact(a: Decimal, b: Decimal) -> Option<Decimal> {
    add_exact(a, -b)
}

/// `a * b`, or `None` when the exact product is not representable (out of range, more than 28
/// decimal places, or more than 96 bits of mantissa).
pub fn mul_exact(a: Decimal, b: Decimal) -> Option<Decimal> {
    let product = a.checked_mul(b)?;
    // rust_decimal keeps the scale `a.scale + b.scale` unless it has to round (the scale exceeds
    // 28 or the mantissa 96 bits). A zero product is exact whatever its scale.
    if a.is_zero() || b.is_zero() || product.scale() == a.scale() + b.scale() {
        return Some(product);
    }
    (exact_product(a, b)? == product).then_some(product)
}

/// The exact sum as a `Decimal`, or `None` if it has no exact representation.
fn exact_sum(a: Decimal, b: Decimal) -> Option<Decimal> {
    // Without trailing zeros, the operand with the larger scale ends in a non-zero digit at that
    // scale (when the scales differ), so the sum does too and needs that scale: if aligning the
    // other operand overflows i128, the sum cannot fit 96 bits either.
    let (a, b) = (a.normalize(), b.normalize());
    let (lo, hi) = if a.scale() <= b.scale() {
        (a, b)
    } else {
        (b, a)
    };
    let aligned = lo
        .mantissa()
        .checked_mul(10_i128.checked_pow(hi.scale() - lo.scale())?)?;
    from_exact(aligned.checked_add(hi.mantissa())?, i64::from(hi.scale()))
}

/// The exact product as a `Decimal`, or `None` if it has no exact representation.
fn exact_product(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (a, b) = (a.normalize(), b.normalize());
    let (mut ma, mut mb) = (a.mantissa(), b.mantissa());
    // Take the product's trailing zeros (pairs of 2 and 5 across both factors) out before
    // multiplying; what is left has none, so if it overflows i128 it cannot fit 96 bits.
    let zeros = (twos(ma) + twos(mb)).min(fives(ma) + fives(mb));
    for (p, count) in [(2, zeros), (5, zeros)] {
        for _ in 0..count {
            if ma % p == 0 {
                ma /= p;
            } else {
                mb /= p;
            }
        }
    }
    let scale = i64::from(a.scale() + b.scale()) - i64::from(zeros);
    from_exact(ma.checked_mul(mb)?, scale)
}

fn twos(m: i128) -> u32 {
    if m == 0 {
        0
    } else {
        m.trailing_zeros()
    }
}

fn fives(mut m: i128) -> u32 {
    let mut n = 0;
    while m != 0 && m % 5 == 0 {
        m /= 5;
        n += 1;
    }
    n
}

/// `mantissa * 10^-scale` as a `Decimal` if that is exactly representable.
fn from_exact(mut mantissa: i128, mut scale: i64) -> Option<Decimal> {
    while scale < 0 {
        mantissa = mantissa.checked_mul(10)?;
        scale += 1;
    }
    // Drop trailing zeros while the mantissa is too wide or the scale too fine; anything else
    // would round.
    while (mantissa.unsigned_abs() > MAX_MANTISSA || scale > 28) && scale > 0 && mantissa % 10 == 0
    {
        mantissa /= 10;
        scale -= 1;
    }
    if mantissa.unsigned_abs() > MAX_MANTISSA || scale > 28 {
        return None;
    }
    Decimal::try_from_i128_with_scale(mantissa, u32::try_from(scale).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use core::str::FromStr;

    #[test]
    fn exact_forms() {
        assert_eq!(
            parse_decimal("12.50"),
            Some(Decimal::from_str("12.50").unwrap())
        );
        assert_eq!(parse_decimal("-3"), Some(Decimal::from(-3)));
        assert_eq!(parse_decimal("1.5e3"), Some(Decimal::from(1500)));
        assert_eq!(
            parse_decimal("0.1"),
            Some(Decimal::from_str("0.1").unwrap())
        );
    }

    /// Found by fuzzing (`metric_match`): scientific notation was rounded to 28 places.
    #[test]
    fn scientific_notation_is_exact_or_refused() {
        assert_eq!(
            parse_decimal("+654557000.11111111111155555555555555555E-7"),
            None
        );
        assert_eq!(parse_decimal("654557000.111E-7"), Some(d("65.4557000111")));
        assert_eq!(parse_decimal("1.50e1").unwrap().to_string(), "15");
        assert_eq!(parse_decimal("-2E+3"), Some(Decimal::from(-2000)));
        assert_eq!(parse_decimal("0e-99"), Some(Decimal::ZERO));
        assert_eq!(parse_decimal("1e-28"), Some(Decimal::new(1, 28)));
        assert_eq!(parse_decimal("1e-29"), None);
        assert_eq!(
            parse_decimal("7e28"),
            Some(d("70000000000000000000000000000"))
        );
        assert_eq!(parse_decimal("8e28"), None);
        for bad in ["e5", "1e", "1e5e5", "1.5e3.0", "1e99999999999999999999"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }

    #[test]
    fn refuses_non_numbers() {
        for bad in ["", "abc", "1_000", "NaN", "inf", "1.2.3", "--1"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// Found by fuzzing (`merge`): `checked_add` rounded `MAX + -94.72` to a whole number.
    #[test]
    fn add_refuses_what_checked_add_rounds() {
        let max = Decimal::MAX;
        assert_eq!(
            max.checked_add(d("-94.72")),
            Some(d("79228162514264337593543950240"))
        );
        assert_eq!(add_exact(max, d("-94.72")), None);
        assert_eq!(
            add_exact(max, d("-94")),
            Some(d("79228162514264337593543950241"))
        );
        assert_eq!(add_exact(max, Decimal::ONE), None);
        assert_eq!(sub_exact(d("1.50"), d("0.5")), Some(d("1.00")));
        assert_eq!(add_exact(d("1.50"), d("1")).unwrap().to_string(), "2.50");
        // Rounding that happens to drop only zeros is exact and kept.
        let big = d("5000000000000000000000000000.5");
        assert_eq!(
            add_exact(big, big),
            Some(d("10000000000000000000000000001"))
        );
    }

    #[test]
    fn mul_refuses_what_checked_mul_rounds() {
        // 1e-15 * 1e-14 = 1e-29, one place more than a Decimal has.
        let (a, b) = (d("0.000000000000001"), d("0.00000000000001"));
        assert_eq!(a.checked_mul(b), Some(Decimal::ZERO));
        assert_eq!(mul_exact(a, b), None);
        assert_eq!(mul_exact(b, b), Some(Decimal::new(1, 28)));
        assert_eq!(mul_exact(d("2.50"), d("2")).unwrap().to_string(), "5.00");
        assert_eq!(mul_exact(Decimal::MAX, Decimal::ONE), Some(Decimal::MAX));
        assert_eq!(mul_exact(Decimal::MAX, d("0.5")), None);
        assert_eq!(mul_exact(Decimal::MAX, Decimal::TWO), None);
        assert_eq!(mul_exact(d("0"), Decimal::MAX), Some(Decimal::ZERO));
        // 2e-15 * 5e-14 = 1e-28: scale 29 in the raw product, exact after dropping a zero.
        assert_eq!(
            mul_exact(d("0.000000000000002"), d("0.00000000000005")),
            Some(Decimal::new(1, 28))
        );
        // 5^40 * 2^40 = 10^40, far beyond i128 before its zeros are taken out.
        let five40 = Decimal::from_i128_with_scale(5_i128.pow(40), 28);
        let two40 = Decimal::from_i128_with_scale(2_i128.pow(40), 28);
        assert_eq!(mul_exact(five40, two40), Some(Decimal::new(1, 16)));
    }
}

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

/// `a * b` rounded half-even to `places` decimal places when the exact product has more, and
/// the exact product otherwise; `None` when the result is out of range. The rounding is of the
/// exact product (computed in 192 bits when it does not fit a `Decimal`), never of an already
/// rounded one, so it is a single correct half-even rounding.
pub fn mul_round_half_even(a: Decimal, b: Decimal, places: u32) -> Option<Decimal> {
    if let Some(p) = mul_exact(a, b) {
        if p.scale() <= places {
            return Some(p);
        }
        return Some(
            p.round_dp_with_strategy(places, rust_decimal::RoundingStrategy::MidpointNearestEven),
        );
    }
    let scale = a.scale() + b.scale();
    if scale <= places {
        // Exact at this scale yet not representable: out of range.
        return None;
    }
    let mut limbs = wide_product(a.mantissa().unsigned_abs(), b.mantissa().unsigned_abs());
    // Drop `scale - places` digits, remembering the last one dropped and whether any before it
    // was non-zero.
    let (mut last, mut sticky) = (0u64, false);
    for _ in places..scale {
        sticky |= last != 0;
        last = div_small(&mut limbs, 10);
    }
    let mut q = u128::from(limbs[0]) | (u128::from(limbs[1]) << 64);
    if limbs[2] != 0 || limbs[3] != 0 {
        return None;
    }
    if last > 5 || (last == 5 && (sticky || q % 2 == 1)) {
        q = q.checked_add(1)?;
    }
    if q > MAX_MANTISSA {
        return None;
    }
    let signed = i128::try_from(q).ok()?;
    let negative = a.is_sign_negative() != b.is_sign_negative();
    Decimal::try_from_i128_with_scale(if negative { -signed } else { signed }, places).ok()
}

/// `a / b` exact (without trailing zeros) when the quotient terminates within a `Decimal`, and
/// otherwise rounded half-even to `places` decimal places (a single rounding of the exact
/// quotient: the remainder decides, not an already rounded 28-digit quotient). `None` when `b`
/// is zero or the result is out of range.
pub fn div_round_half_even(a: Decimal, b: Decimal, places: u32) -> Option<Decimal> {
    let quotient = a.checked_div(b)?;
    if mul_exact(quotient, b) == Some(a) {
        return Some(quotient.normalize());
    }
    let negative = a.is_sign_negative() != b.is_sign_negative();
    let (a, b) = (a.abs(), b.abs());
    let ulp = Decimal::new(1, places);
    let mut q = quotient
        .abs()
        .round_dp_with_strategy(places, rust_decimal::RoundingStrategy::ToZero);
    // `q` truncates a quotient that was rounded once already: step it onto the exact floor,
    // where `0 <= a - q·b < ulp·b`.
    let step = mul_exact(ulp, b)?;
    let mut rem = sub_exact(a, mul_exact(q, b)?)?;
    while rem < Decimal::ZERO {
        q = sub_exact(q, ulp)?;
        rem = add_exact(rem, step)?;
    }
    while rem >= step {
        q = add_exact(q, ulp)?;
        rem = sub_exact(rem, step)?;
    }
    let twice = add_exact(rem, rem)?;
    if twice > step || (twice == step && (q / ulp) % Decimal::TWO == Decimal::ONE) {
        q = add_exact(q, ulp)?;
    }
    Some(if negative { -q } else { q })
}

/// The exact product of two mantissas below 2^96, as four little-endian 64-bit limbs.
fn wide_product(a: u128, b: u128) -> [u64; 4] {
    let (a0, a1) = (a & u128::from(u64::MAX), a >> 64);
    let (b0, b1) = (b & u128::from(u64::MAX), b >> 64);
    // a1, b1 < 2^32: every partial product below fits u128.
    let lo = a0 * b0;
    let mid = a0 * b1 + a1 * b0;
    let hi = a1 * b1;
    let (lo, carry) = lo.overflowing_add(mid << 64);
    let hi = hi + (mid >> 64) + u128::from(carry);
    [lo as u64, (lo >> 64) as u64, hi as u64, (hi >> 64) as u64]
}

/// Divides the little-endian limbs by `d` in place; returns the remainder.
fn div_small(limbs: &mut [u64; 4], d: u64) -> u64 {
    let mut rem: u128 = 0;
    for limb in limbs.iter_mut().rev() {
        let cur = (rem << 64) | u128::from(*limb);
        *limb = (cur / u128::from(d)) as u64;
        rem = cur % u128::from(d);
    }
    rem as u64
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
    fn mul_round_half_even_rounds_the_exact_product_once() {
        let r = |a: &str, b: &str| mul_round_half_even(d(a), d(b), 12).map(|x| x.to_string());
        // Exact products with few places are kept as they are.
        assert_eq!(r("100", "0.333333").as_deref(), Some("33.333300"));
        assert_eq!(r("2.5", "0.8").as_deref(), Some("2.00"));
        // More than 12 places: half-even at the 12th.
        assert_eq!(
            r("0.0000001", "0.0000015").as_deref(),
            Some("0.000000000000")
        );
        assert_eq!(
            r("0.000001", "0.0000025").as_deref(),
            Some("0.000000000002")
        );
        assert_eq!(
            r("0.000001", "0.0000035").as_deref(),
            Some("0.000000000004")
        );
        assert_eq!(
            r("-0.000001", "0.0000035").as_deref(),
            Some("-0.000000000004")
        );
        // A product whose exact form needs more than 28 places (checked_mul would round it
        // first): 0.1234567890123456789 * 0.333333333333333 = 0.04115226300411522...
        assert_eq!(
            r("0.1234567890123456789", "0.333333333333333").as_deref(),
            Some("0.041152263004")
        );
        // Just past a midpoint only in digits a 28-place product would drop: rounding that
        // product again would give 0.000000000000.
        let (a, b) = (d("0.0000000000005"), d("1.0000000000000000000000000001"));
        assert_eq!(a.checked_mul(b), Some(d("0.0000000000005000000000000000")));
        assert_eq!(
            r("0.0000000000005", "1.0000000000000000000000000001").as_deref(),
            Some("0.000000000001")
        );
        // An exact midpoint goes to the even neighbour.
        assert_eq!(r("0.0000000000005", "1").as_deref(), Some("0.000000000000"));
        assert_eq!(r("0.0000000000015", "1").as_deref(), Some("0.000000000002"));
        assert_eq!(mul_round_half_even(Decimal::MAX, d("2"), 12), None);
        // The exact product has one place and needs 97 bits: no 12-place form holds it.
        assert_eq!(mul_round_half_even(Decimal::MAX, d("0.5"), 12), None);
    }

    #[test]
    fn div_round_half_even_is_exact_or_rounds_the_exact_quotient_once() {
        let r = |a: &str, b: &str| div_round_half_even(d(a), d(b), 12).map(|x| x.to_string());
        assert_eq!(r("5050", "100").as_deref(), Some("50.5"));
        assert_eq!(r("1", "1024").as_deref(), Some("0.0009765625"));
        assert_eq!(r("1000", "3").as_deref(), Some("333.333333333333"));
        assert_eq!(r("2000", "3").as_deref(), Some("666.666666666667"));
        assert_eq!(r("-2000", "3").as_deref(), Some("-666.666666666667"));
        assert_eq!(r("2000", "-3").as_deref(), Some("-666.666666666667"));
        // A terminating quotient is kept even past 12 places.
        assert_eq!(
            r("0.0000000000001", "1").as_deref(),
            Some("0.0000000000001")
        );
        // 2/3 ÷ 1e12 needs rounding at the 12th place of a quotient far below 1.
        assert_eq!(r("2", "3000000000000").as_deref(), Some("0.000000000001"));
        assert_eq!(r("1", "3000000000000").as_deref(), Some("0.000000000000"));
        // 1/7 has a non-terminating expansion: 0.142857142857|142857...
        assert_eq!(r("1", "7").as_deref(), Some("0.142857142857"));
        assert_eq!(r("6", "7").as_deref(), Some("0.857142857143"));
        assert_eq!(div_round_half_even(d("1"), Decimal::ZERO, 12), None);
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

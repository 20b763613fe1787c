//! Exact decimal parsing for quantities and prices.
//!
//! Property values arrive as JSON strings or numbers; both are parsed from their text, never through
//! a float. A value that does not fit `Decimal` exactly (more than 28 significant digits) is refused
//! rather than rounded.

use rust_decimal::Decimal;

/// Parses plain (`-12.50`) or scientific (`1.5e3`) decimal text exactly. `None` when the text is not
/// a number or cannot be represented without loss.
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    // rust_decimal tolerates `_` separators; a billing quantity should not.
    if s.is_empty() || s.len() > 64 || s.contains('_') {
        return None;
    }
    if s.contains(['e', 'E']) {
        return Decimal::from_scientific(s).ok().map(|d| d.normalize());
    }
    Decimal::from_str_exact(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn refuses_non_numbers() {
        for bad in ["", "abc", "1_000", "NaN", "inf", "1.2.3", "--1"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }
}

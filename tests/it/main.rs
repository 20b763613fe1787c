//! Tally's end-to-end tests: one integration binary, one module per area.

mod sdk_python;

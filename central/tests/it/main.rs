//! In-process HTTP tests of the central router: one integration binary, one module per area.

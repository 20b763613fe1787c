//! Rating (being written).

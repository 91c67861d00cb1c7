//! Topic index (being written).

//! Broker configuration (being written).

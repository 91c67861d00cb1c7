//! Security files in mosquitto's formats: [`password`] files (`password_file`, made by
//! `mosquitto_passwd` or `surgemq passwd`) and [`acl`] files (parsed and checked; the
//! broker does not enforce them yet). Pure: parsing, hashing and checking; the
//! server reads the files, and the broker's hooks ([`crate::server::Authenticator`]) are
//! how they take effect.
//!
//! **Must not touch:** sockets, runtimes, broker state.

pub mod acl;
pub mod password;

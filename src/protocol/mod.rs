//! Pure FTP wire format: commands, replies, data-address encodings and the
//! bounded line codecs for both sides. Nothing here performs I/O, so every
//! function can be unit-tested, property-tested and fuzzed on byte slices.

pub mod address;
pub mod codec;
pub mod codes;
pub mod command;
pub mod reply;

pub use command::{Command, TransferDirection, Verb};
pub use reply::Reply;

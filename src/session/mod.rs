//! The control channel of a session, without I/O: [`core`] is the state
//! machine that decides what the client hears and when; the rest are the
//! pure rules it uses (active-mode address checks, `FEAT` filtering, the
//! verdict on a transfer's final reply, how a data channel ended). The
//! driver that owns the sockets lives in `server::session`.

pub mod active;
pub mod core;
pub mod feat;
pub mod outcome;
pub mod verdict;

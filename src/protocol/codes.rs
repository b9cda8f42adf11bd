//! Reply codes by name (RFC 959 section 4.2, RFC 2228, RFC 4217), for the
//! replies ftpgate writes itself and the ones it inspects.

/// Data connection already open; transfer starting.
pub const TRANSFER_STARTING: u16 = 125;
/// File status okay; about to open the data connection.
pub const OPENING_DATA: u16 = 150;
pub const OK: u16 = 200;
pub const FEATURES: u16 = 211;
/// File status (SIZE's answer).
pub const FILE_STATUS: u16 = 213;
pub const HELP: u16 = 214;
/// NAME system type (SYST).
pub const SYSTEM_TYPE: u16 = 215;
pub const READY: u16 = 220;
pub const CLOSING: u16 = 221;
/// ABOR with no transfer to abort.
pub const NO_TRANSFER: u16 = 225;
/// Transfer complete (or ABOR of a transfer done).
pub const TRANSFER_COMPLETE: u16 = 226;
pub const PASSIVE: u16 = 227;
pub const EXTENDED_PASSIVE: u16 = 229;
pub const LOGGED_IN: u16 = 230;
/// AUTH TLS accepted; the TLS handshake follows.
pub const AUTH_OK: u16 = 234;
pub const PATH_CREATED: u16 = 257;
pub const NEED_PASSWORD: u16 = 331;
pub const PENDING: u16 = 350;
/// Service not available, closing the control connection.
pub const NOT_AVAILABLE: u16 = 421;
pub const CANNOT_OPEN_DATA: u16 = 425;
/// Connection closed; transfer aborted.
pub const TRANSFER_ABORTED: u16 = 426;
/// Requested file action not taken (busy, limits).
pub const ACTION_NOT_TAKEN: u16 = 450;
/// Requested action aborted: local error in processing (an upload the
/// malware scanner could not judge, removed).
pub const LOCAL_ERROR: u16 = 451;
pub const SYNTAX_ERROR: u16 = 500;
pub const BAD_ARGUMENT: u16 = 501;
pub const NOT_IMPLEMENTED: u16 = 502;
pub const BAD_SEQUENCE: u16 = 503;
/// Command not implemented for that parameter.
pub const PARAMETER_NOT_IMPLEMENTED: u16 = 504;
/// EPSV/EPRT with an address family ftpgate does not serve (RFC 2428).
pub const NETWORK_PROTOCOL_NOT_SUPPORTED: u16 = 522;
/// The data connection's TLS session did not resume the control session.
pub const TLS_NOT_RESUMED: u16 = 522;
pub const NOT_LOGGED_IN: u16 = 530;
/// Request denied for policy reasons (RFC 2228; CCC).
pub const POLICY_REFUSED: u16 = 534;
/// Data connections must be protected: send `PROT P` (RFC 4217 9).
pub const PROTECTION_REQUIRED: u16 = 521;
/// Requested PROT level not supported (RFC 2228).
pub const PROTECTION_NOT_SUPPORTED: u16 = 536;
pub const FILE_UNAVAILABLE: u16 = 550;
/// Exceeded storage allocation.
pub const EXCEEDED_STORAGE: u16 = 552;

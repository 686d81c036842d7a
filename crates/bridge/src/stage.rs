//! The stages of a forwarded request, each a small function over the request's
//! [`Exchange`](exchange::Exchange); [`crate::proxy`] runs them in order.
//!
//! [`auth`] → [`read`] → [`route`] (for the client's dialect) → [`resolve`] → [`send`] (with
//! [`pick`], parking while no replica is ready).

pub mod admit;
pub mod affinity;
pub mod auth;
pub mod exchange;
pub mod form;
pub mod pick;
pub mod prefix;
pub mod read;
pub mod resolve;
pub mod route;
pub mod send;

//! DNS wire format on the query path: parsing requests and writing responses into a
//! reused buffer, with no allocation per query.

mod record;
pub(crate) mod request;
mod writer;

pub(crate) use record::WireRecord;
pub(crate) use writer::{Section, Writer};

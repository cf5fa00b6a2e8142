//! Where the active policy comes from, and where it is kept:
//! - `store`: [`store::PolicyStore`], the active policy, shared by the data
//!   plane, the admin server and the sources below;
//! - `file`: a policy file (standalone mode), watched for changes;
//! - `stream`: the controller's policy stream (sidecar mode).
//!
//! Every source hands whole updates to the store, which validates and
//! compiles them first: a bad policy never replaces a good one.
pub mod file;
pub mod store;
pub mod stream;

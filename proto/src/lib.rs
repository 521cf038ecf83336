//! Isobar's wire contracts.
//!
//! Everything that crosses a process boundary is defined in `proto/isobar/v1/*.proto` and
//! generated here with tonic and prost (through `protox`, so no system `protoc` is needed).
//! Inputs: the `.proto` files. Outputs: message types, client stubs, server traits, the
//! encoded descriptor set for gRPC reflection, and the few helpers every side of a contract
//! must compute identically (the geographic grid, the client-key hash, Maglev tables).

/// Generated code for package `isobar.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("isobar.v1");
}

pub mod delta;
pub mod geo;
pub mod hash;
pub mod maglev;

/// The encoded `FileDescriptorSet` of every Isobar service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("isobar_descriptor");

//! Where data lands: the lake's object store and the partitioned Parquet writer.

pub mod bucket;
pub mod merge;
pub mod stats;
pub mod store;
pub mod writer;

pub use store::{Created, LakeStore, StoreError};
pub use writer::{
    FileNamer, NO_CURSOR_PARTITION, PartitionedWriter, Partitioning, WriteError, WriterLimits,
    WrittenFile, date_partition, day_of, file_properties, is_cursorless, partition_day,
    spawn_encoding,
};

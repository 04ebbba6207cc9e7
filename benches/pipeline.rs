//! Stage benchmarks on realistic generated events (the fake API's emailSend and user lines):
//! decode (NDJSON bytes → RecordBatch) and encode (RecordBatch → zstd Parquet, with the
//! lake's file properties), in bytes/s of NDJSON.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iterable_lake::catalog;
use iterable_lake::convert::{Decoder, StreamSchema};
use iterable_lake::fake::{FakeConfig, FakeIterable};
use iterable_lake::sink::{WriterLimits, file_properties};
use parquet::arrow::ArrowWriter;

/// About 4 MiB chunks of whole lines, as the export pipeline hands to a decode job.
fn chunks(stream: &str, events_per_day: u32) -> (Vec<Vec<u8>>, &'static catalog::StreamDef) {
    let def = catalog::find(stream).expect("stream");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lines = rt.block_on(async {
        let fake = FakeIterable::start(FakeConfig {
            events_per_day,
            days: 1,
            users: 5000,
            ..FakeConfig::small(7)
        })
        .await
        .expect("fake");
        let start = fake.config().start;
        fake.truth_lines(def.data_type(), start, start + chrono::Duration::days(1))
    });
    let mut out = vec![Vec::new()];
    for line in lines {
        let last = out.last_mut().expect("one chunk");
        last.extend_from_slice(line.as_bytes());
        last.push(b'\n');
        if last.len() >= 4 << 20 {
            out.push(Vec::new());
        }
    }
    (out, def)
}

fn decoder(def: &catalog::StreamDef) -> Decoder {
    let schema = StreamSchema::parse(def.name, def.schema, def.is_event()).expect("schema");
    Decoder::new(Arc::new(schema), 0, def.data_type())
}

fn decode(c: &mut Criterion) {
    for (stream, per_day) in [("email_send", 20_000), ("users", 5_000)] {
        let (chunks, def) = chunks(stream, per_day);
        let d = decoder(def);
        let bytes: usize = chunks.iter().map(Vec::len).sum();
        let mut g = c.benchmark_group("decode");
        g.throughput(Throughput::Bytes(bytes as u64));
        g.sample_size(10);
        g.bench_function(stream, |b| {
            b.iter(|| {
                chunks
                    .iter()
                    .map(|c| d.decode(c).expect("decodes").batch.num_rows())
                    .sum::<usize>()
            })
        });
        g.finish();
    }
}

fn encode(c: &mut Criterion) {
    let (chunks, def) = chunks("email_send", 20_000);
    let d = decoder(def);
    let bytes: usize = chunks.iter().map(Vec::len).sum();
    let batches: Vec<_> = chunks
        .iter()
        .map(|c| d.decode(c).expect("decodes").batch)
        .collect();
    let props = file_properties(&WriterLimits::default(), &batches[0]);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    g.bench_function("email_send", |b| {
        b.iter(|| {
            let mut w = ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props.clone()))
                .expect("writer");
            for batch in &batches {
                w.write(batch).expect("write");
            }
            w.into_inner().expect("close").len()
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);

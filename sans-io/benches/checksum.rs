//! The Internet checksum's speed: the one user-space pass over each payload byte on the data
//! path (`cargo bench -p sans-io --bench checksum`), in bytes per second for frame-sized
//! buffers.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sans_io::wire::checksum;

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum");
    for len in [64usize, 1460, 9000, 65480] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("transport/{len}"), |b| {
            let (src, dst) = (
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            );
            b.iter(|| checksum::transport(src, dst, 6, black_box(&data)))
        });
    }
    group.finish();
}

criterion_group!(benches, checksum);
criterion_main!(benches);

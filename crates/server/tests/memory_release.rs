//! `server::memory::release_freed` hands memory freed on a thread that has exited back to the
//! OS, under the allocator the members run with (mimalloc).
//!
//! Why: a snapshot writer thread encodes the whole store, frees it and exits; mimalloc kept
//! those pages resident until later allocations happened to reuse them, and members sat at up
//! to 2.2× etcd's resident memory after etcd's own put benchmark (docs/performance.md). The
//! test reproduces that pattern: before the call the freed memory must still be resident
//! (otherwise the test would show nothing), after it most of it must be gone.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[test]
fn memory_freed_by_an_exited_thread_goes_back_to_the_os() {
    const BLOCKS: usize = 200_000;
    const BLOCK: usize = 1024;
    let base = rss_kib();
    // Like a snapshot writer: many allocations, all touched, freed, and the thread gone.
    std::thread::spawn(|| {
        let blocks: Vec<Box<[u8]>> = (0..BLOCKS)
            .map(|i| vec![(i % 251) as u8; BLOCK].into_boxed_slice())
            .collect();
        assert_eq!(blocks.len(), BLOCKS);
    })
    .join()
    .unwrap();
    let freed_but_resident = rss_kib();
    server::memory::release_freed();
    let after = rss_kib();
    let allocated_kib = (BLOCKS * BLOCK / 1024) as u64;
    eprintln!(
        "RSS: {base} KiB at start, {freed_but_resident} KiB after the thread freed \
         {allocated_kib} KiB and exited, {after} KiB after release_freed"
    );
    assert!(
        freed_but_resident > base + allocated_kib / 2,
        "the freed memory was already returned: this test cannot show anything"
    );
    assert!(
        after < base + allocated_kib / 4,
        "release_freed left {} KiB of {allocated_kib} KiB resident",
        after.saturating_sub(base)
    );
}

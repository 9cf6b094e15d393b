//! A snapshot is written on another thread while the WAL keeps appending.
//!
//! The image reader is gated: it hands out half the image, then blocks until the test lets
//! it go on. While the writer thread is parked inside `SnapshotWriter::write`, the store
//! must keep accepting durable appends; if writing a snapshot held anything the WAL needs,
//! the appends would stall and the deadline below would fire.

use std::io::Read;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};
use storage::{RealFs, Storage, StorageOptions};

struct GatedImage {
    data: Vec<u8>,
    pos: usize,
    halfway: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

impl Read for GatedImage {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() / 2 {
            if let Some((reached, resume)) = self.halfway.take() {
                reached.send(()).unwrap();
                resume.recv().unwrap();
            }
        }
        let n = buf.len().min(self.data.len() - self.pos).min(64 * 1024);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![index as u8; 512]),
    }
}

#[test]
fn appends_continue_while_a_snapshot_is_being_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = StorageOptions::new(1, 9);
    opts.segment_size = 64 * 1024;
    let (mut store, _) = Storage::open(Arc::new(RealFs), tmp.path(), &opts).unwrap();
    store
        .save(
            Some(&HardState {
                term: 1,
                vote: Some(1),
                commit: 100,
            }),
            &(1..=100).map(entry).collect::<Vec<_>>(),
            None,
        )
        .unwrap();

    let image: Vec<u8> = (0..4 << 20).map(|i| (i % 253) as u8).collect();
    let (reached_tx, reached_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let meta = SnapshotMeta {
        index: 100,
        term: 1,
        conf_state: ConfState {
            voters: vec![1],
            learners: vec![],
        },
    };
    let writer = store.snapshot_writer();
    let (image_for_thread, meta_for_thread) = (image.clone(), meta.clone());
    let background = std::thread::spawn(move || {
        let mut reader = GatedImage {
            data: image_for_thread,
            pos: 0,
            halfway: Some((reached_tx, resume_rx)),
        };
        writer.write(&meta_for_thread, &mut reader)
    });
    reached_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the writer reached the middle of the image");

    // The writer is parked mid-image. Appends go on, each one durable, from another
    // thread so a stall shows up as a timeout rather than a hung test.
    let (done_tx, done_rx) = mpsc::channel();
    let appender = std::thread::spawn(move || {
        for i in 101..=300 {
            store
                .save(
                    Some(&HardState {
                        term: 1,
                        vote: Some(1),
                        commit: i,
                    }),
                    &[entry(i)],
                    None,
                )
                .unwrap();
        }
        done_tx.send(()).unwrap();
        store
    });
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("appends completed while the snapshot writer was blocked");
    let mut store = appender.join().unwrap();

    resume_tx.send(()).unwrap();
    let written = background.join().unwrap().unwrap();
    store.compact_to(&written).unwrap();
    let (store, recovered) = store.reopen().unwrap();
    assert_eq!(store.first_index(), 101);
    assert_eq!(store.last_index(), 300);
    let snap = recovered.snapshot.unwrap();
    assert_eq!(snap.meta, meta);
    assert_eq!(&snap.data[..], &image[..]);
}

//! A snapshot sent in parts: one [`Frame::SnapshotHead`] (the `InstallSnapshot` message
//! without its image, and the image's length) followed by [`Frame::SnapshotPart`]s of at
//! most [`PART`] bytes each, consecutive on one connection.
//!
//! Why not one frame: a frame's length is a `u32` and a member refuses frames above
//! [`codec::MAX_FRAME`] (1 GiB), so the image of a store of 1 GiB of live data could not be
//! sent at all — a member added to such a cluster never caught up. Sent whole, the image was
//! also copied into one buffer on the node thread of the leader (a stall of every write for
//! as long as the copy took) and again into the peer's backlog. In parts, the node thread only
//! hands the connection task the image (`Bytes`, shared with the Raft core: no copy), and the
//! task frames one part at a time as the socket takes them.
//!
//! The receiver collects the parts and hands the node the whole `InstallSnapshot` message once
//! the last part is there, exactly as if it had come in one frame: the Raft core and the node
//! driver never see parts. A connection that breaks midway loses the partial image (the
//! leader sends the snapshot again, as it does for any lost message).
//!
//! Used only towards peers that advertise [`codec::FEATURE_SNAPSHOT_PARTS`]; an older peer
//! still gets the single frame (and cannot take an image above 1 GiB).

use bytes::{Bytes, BytesMut};
use raft::{Message, MessageBody};

use super::codec::{self, Frame};

/// Image bytes per [`Frame::SnapshotPart`]: large enough that framing costs nothing, small
/// enough that the connection task never holds more than this in an extra buffer.
pub const PART: usize = 1 << 20;

/// The largest image a member takes in parts (far above any store etcd allows: its quota
/// stops at 8 GiB). A larger announced length ends the connection before anything is
/// reserved.
pub const MAX_IMAGE: u64 = 64 << 30;

/// The frames still to write for one snapshot: the head, then the parts.
pub struct Outgoing {
    head: Option<Message>,
    image: Bytes,
    offset: usize,
}

impl Outgoing {
    /// `message` must be an `InstallSnapshot`; `None` otherwise.
    pub fn new(message: &Message) -> Option<Outgoing> {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            return None;
        };
        let mut head = message.clone();
        let image = std::mem::take(match &mut head.body {
            MessageBody::InstallSnapshot { snapshot } => &mut snapshot.data,
            _ => unreachable!("cloned from an InstallSnapshot"),
        });
        debug_assert_eq!(image.len(), snapshot.data.len());
        Some(Outgoing {
            head: Some(head),
            image,
            offset: 0,
        })
    }

    /// The image's size in bytes.
    pub fn len(&self) -> usize {
        self.image.len()
    }

    /// Append the next frame to `out`; false when every frame was given.
    pub fn next_frame(&mut self, out: &mut BytesMut) -> bool {
        if let Some(message) = self.head.take() {
            codec::encode(
                &Frame::SnapshotHead {
                    message,
                    len: self.image.len() as u64,
                },
                out,
            );
            return true;
        }
        if self.offset >= self.image.len() {
            return false;
        }
        let end = (self.offset + PART).min(self.image.len());
        codec::encode_snapshot_part(&self.image[self.offset..end], out);
        self.offset = end;
        true
    }
}

/// The receiving side of one connection: the image being collected, if any.
#[derive(Default)]
pub struct Incoming {
    pending: Option<(Message, Vec<u8>, usize)>,
}

impl Incoming {
    /// A [`Frame::SnapshotHead`]: start collecting `len` bytes (the message itself if the
    /// image is empty). A head while another image is incomplete, a head that is not an
    /// `InstallSnapshot` with an empty image, or a length above [`MAX_IMAGE`] is a broken
    /// stream: the caller closes the connection.
    pub fn head(&mut self, message: Message, len: u64) -> Result<Option<Message>, String> {
        if self.pending.is_some() {
            return Err("a snapshot head before the previous snapshot's last part".into());
        }
        match &message.body {
            MessageBody::InstallSnapshot { snapshot } if snapshot.data.is_empty() => {}
            _ => return Err("a snapshot head that carries no empty InstallSnapshot".into()),
        }
        if len > MAX_IMAGE {
            return Err(format!("a snapshot of {len} bytes exceeds the limit"));
        }
        let len = len as usize;
        let mut image = Vec::new();
        image
            .try_reserve_exact(len)
            .map_err(|e| format!("cannot reserve {len} bytes for a snapshot: {e}"))?;
        self.pending = Some((message, image, len));
        Ok(self.take_complete())
    }

    /// A [`Frame::SnapshotPart`]; the whole message once its last part arrived. A part
    /// without a head, or one that overruns the announced length, is a broken stream.
    pub fn part(&mut self, data: &[u8]) -> Result<Option<Message>, String> {
        let Some((_, image, len)) = self.pending.as_mut() else {
            return Err("a snapshot part without a head".into());
        };
        if image.len() + data.len() > *len {
            return Err(format!("snapshot parts overrun the announced {len} bytes"));
        }
        image.extend_from_slice(data);
        Ok(self.take_complete())
    }

    /// The finished message, if the pending image is whole.
    fn take_complete(&mut self) -> Option<Message> {
        match &self.pending {
            Some((_, image, len)) if image.len() == *len => {}
            _ => return None,
        }
        let (mut message, image, _) = self.pending.take()?;
        if let MessageBody::InstallSnapshot { snapshot } = &mut message.body {
            snapshot.data = Bytes::from(image);
        }
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{ConfState, Snapshot, SnapshotMeta};

    fn install(image: Vec<u8>) -> Message {
        Message {
            from: 1,
            to: 4,
            term: 3,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 1000,
                        term: 2,
                        conf_state: ConfState {
                            voters: vec![1, 2, 3],
                            learners: vec![4],
                        },
                    },
                    data: Bytes::from(image),
                },
            },
        }
    }

    /// Every frame `Outgoing` gives, each decoded as the receiver would.
    fn frames(message: &Message) -> Vec<Frame> {
        let mut out = Outgoing::new(message).expect("an InstallSnapshot");
        let mut frames = Vec::new();
        let mut buf = BytesMut::new();
        while out.next_frame(&mut buf) {
            let body = codec::split_frame(&mut buf)
                .unwrap()
                .expect("a whole frame");
            assert!(buf.is_empty(), "one frame per call");
            assert!(body.len() <= PART + 64, "a part of {} bytes", body.len());
            frames.push(codec::decode(body).unwrap());
        }
        frames
    }

    fn receive(frames: Vec<Frame>) -> Result<Vec<Message>, String> {
        let mut incoming = Incoming::default();
        let mut got = Vec::new();
        for f in frames {
            let done = match f {
                Frame::SnapshotHead { message, len } => incoming.head(message, len)?,
                Frame::SnapshotPart { data } => incoming.part(&data)?,
                other => panic!("unexpected frame {other:?}"),
            };
            got.extend(done);
        }
        Ok(got)
    }

    #[test]
    fn an_image_larger_than_one_part_arrives_whole_and_unchanged() {
        let image: Vec<u8> = (0..(2 * PART + 12_345)).map(|i| (i % 251) as u8).collect();
        let message = install(image);
        let frames = frames(&message);
        assert_eq!(frames.len(), 1 + 3, "a head and three parts");
        assert_eq!(receive(frames).unwrap(), vec![message]);
    }

    #[test]
    fn an_empty_image_is_delivered_by_its_head() {
        let message = install(Vec::new());
        let frames = frames(&message);
        assert_eq!(frames.len(), 1);
        assert_eq!(receive(frames).unwrap(), vec![message]);
    }

    #[test]
    fn nothing_is_delivered_before_the_last_part() {
        let message = install(vec![7; PART + 1]);
        let mut frames = frames(&message);
        frames.pop();
        assert_eq!(receive(frames).unwrap(), Vec::<Message>::new());
    }

    #[test]
    fn broken_streams_are_refused() {
        let message = install(vec![7; 10]);
        let mut incoming = Incoming::default();
        assert!(incoming.part(b"x").is_err(), "a part without a head");
        let Frame::SnapshotHead { message: head, len } = frames(&message).remove(0) else {
            panic!("the first frame is the head")
        };
        assert_eq!(incoming.head(head.clone(), len).unwrap(), None);
        assert!(incoming.part(&[0; 11]).is_err(), "overruns the length");
        assert!(incoming.head(head.clone(), len).is_err(), "a second head");
        let mut fresh = Incoming::default();
        assert!(
            fresh.head(head.clone(), MAX_IMAGE + 1).is_err(),
            "too large"
        );
        let heartbeat = Message {
            body: MessageBody::Heartbeat {
                commit: 1,
                read_seq: 0,
            },
            ..head
        };
        assert!(fresh.head(heartbeat, 0).is_err(), "not an InstallSnapshot");
        assert!(Outgoing::new(&install(vec![1]))
            .map(|o| o.len() == 1)
            .unwrap_or(false));
    }
}

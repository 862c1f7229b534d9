//! What nodes send each other through Redis: frames on a node's inbox
//! channel, and announcements on the cluster's control channel. No I/O and
//! no clock: encode into `BufMut`, decode from a byte slice.
//!
//! Every integer is little-endian, as in the cores' own records. Strings
//! (topics, reply subjects, group and node names) are at most 255 bytes
//! after a length byte. The layouts, with test vectors, are in
//! `docs/design/cluster.md` section 5; a change to them is a new version.

use bytes::{Buf, BufMut};

/// The first two bytes of every frame and announcement.
const MAGIC: &[u8; 2] = b"cc";
/// The only version this node writes and reads.
pub(crate) const VERSION: u8 = 1;

/// Frame kinds: the third byte after the magic and the version.
const KIND_FRAME: u8 = 0;
const KIND_HELLO: u8 = 1;
const KIND_ALIVE: u8 = 2;
const KIND_BYE: u8 = 3;
/// A frame outside the path's sequence: flow control that must pass while
/// the path itself waits for credit. Its counts are zero and mean nothing.
const KIND_ASIDE: u8 = 4;

/// Record kinds inside a frame.
const REC_MESSAGE: u8 = 1;
const REC_PLAIN: u8 = 2;
const REC_MEMBERS: u8 = 3;
const REC_CREDIT: u8 = 4;

/// Flags of a message record.
const MSG_PLAIN: u8 = 1;
const MSG_HEADERS: u8 = 2;

/// Why bytes from Redis were not a frame or an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// It ends inside a field.
    #[error("truncated")]
    Truncated,
    /// It does not start with the magic bytes: not ours.
    #[error("not a corecast cluster frame")]
    Magic,
    /// A version this node does not read.
    #[error("version {0} is not supported")]
    Version(u8),
    /// A frame or record kind this node does not know.
    #[error("unknown kind {0}")]
    Kind(u8),
    /// A string is not UTF-8.
    #[error("a name is not UTF-8")]
    Utf8,
}

/// The header of a frame: who sent it to whom, and the counts that let the
/// receiver see what it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader<'a> {
    /// The sending node's name and run.
    pub origin: NodeId<'a>,
    /// A frame of the path, counted; else one aside (credit), which is not.
    pub in_path: bool,
    /// The run of the receiving node the frame is meant for: a frame for
    /// an earlier run of the node is stale.
    pub to_incarnation: u64,
    /// Frames sent on this path (origin run to destination run) before
    /// this one.
    pub path_seq: u64,
    /// Messages sent on this path before this frame.
    pub msgs_before: u64,
    /// Bytes of the frames sent on this path before this one: what the
    /// receiver has taken in once it is done with this frame, whatever
    /// got lost on the way, is this plus the frame's length.
    pub bytes_before: u64,
    /// The origin's interest sequence once this frame's records apply.
    pub interest_seq: u64,
}

/// A node's name and the run of its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeId<'a> {
    pub name: &'a str,
    /// Drawn at random when the process starts: a restarted node is a new
    /// run, with a new inbox, so nothing meant for the old one reaches it.
    pub incarnation: u64,
}

/// One message for the receiving node's subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireMessage<'a> {
    pub topic: &'a str,
    pub reply_to: &'a str,
    /// The tag of the requesting user, when there is a reply subject.
    pub requester: u64,
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// Deliver to the subscribers without a queue group too (false when
    /// only queue groups drew this node).
    pub plain: bool,
    /// Queue groups, as the cores encode them (`GroupNames`), that drew a
    /// member on the receiving node.
    pub groups: &'a [u8],
}

/// A record in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Message(WireMessage<'a>),
    /// From interest sequence `seq` on, the origin has (or no longer has)
    /// subscribers without a queue group on `pattern`.
    Plain {
        seq: u64,
        pattern: &'a str,
        on: bool,
    },
    /// From `seq` on, the origin has `members` members of `group` on
    /// `pattern` (0: none).
    Members {
        seq: u64,
        pattern: &'a str,
        group: &'a str,
        members: u32,
    },
    /// The receiver of this frame may send frames on its path to the
    /// origin while the bytes it sent there before are below `limit`: the
    /// origin took in everything up to some offset, and has room for the
    /// rest.
    Credit {
        limit: u64,
    },
}

/// What a node says on the control channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announce<'a> {
    /// It (re)joined: peers start sending to its inbox and read its
    /// snapshot.
    Hello(Presence<'a>),
    /// Its heartbeat.
    Alive(Presence<'a>),
    /// It leaves: peers forget it at once.
    Bye(Presence<'a>),
}

/// The facts every announcement carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Presence<'a> {
    pub node: NodeId<'a>,
    /// Its interest sequence now.
    pub interest_seq: u64,
    /// The largest message its clients accept.
    pub max_frame: u32,
}

/// Writes a frame header; records follow.
pub(crate) fn put_header(dst: &mut impl BufMut, h: &FrameHeader<'_>) {
    dst.put_slice(MAGIC);
    dst.put_u8(VERSION);
    dst.put_u8(if h.in_path { KIND_FRAME } else { KIND_ASIDE });
    put_node(dst, h.origin);
    dst.put_u64_le(h.to_incarnation);
    dst.put_u64_le(h.path_seq);
    dst.put_u64_le(h.msgs_before);
    dst.put_u64_le(h.bytes_before);
    dst.put_u64_le(h.interest_seq);
}

/// Bytes of a frame header for a node named `name`.
pub(crate) fn header_len(name: &str) -> usize {
    header_len_for(name.len())
}

/// Bytes of a frame header for a node name of `name_len` bytes; the
/// interest sequence is its last eight.
pub(crate) fn header_len_for(name_len: usize) -> usize {
    4 + 1 + name_len + 8 + 8 * 5
}

impl Record<'_> {
    /// Bytes [`Self::encode`] writes.
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Self::Message(m) => {
                let reply = 1 + m.reply_to.len() + if m.reply_to.is_empty() { 0 } else { 8 };
                let headers = m.headers.map_or(0, |h| 2 + h.len());
                1 + 1
                    + 1
                    + m.topic.len()
                    + reply
                    + headers
                    + 4
                    + m.groups.len()
                    + 4
                    + m.payload.len()
            }
            Self::Plain { pattern, .. } => 1 + 8 + 1 + pattern.len() + 1,
            Self::Members { pattern, group, .. } => 1 + 8 + 1 + pattern.len() + 1 + group.len() + 4,
            Self::Credit { .. } => 1 + 8,
        }
    }

    pub(crate) fn encode(&self, dst: &mut impl BufMut) {
        match self {
            Self::Message(m) => {
                dst.put_u8(REC_MESSAGE);
                let mut flags = 0;
                if m.plain {
                    flags |= MSG_PLAIN;
                }
                if m.headers.is_some() {
                    flags |= MSG_HEADERS;
                }
                dst.put_u8(flags);
                put_short(dst, m.topic);
                put_short(dst, m.reply_to);
                if !m.reply_to.is_empty() {
                    dst.put_u64_le(m.requester);
                }
                if let Some(h) = m.headers {
                    dst.put_u16_le(h.len() as u16);
                    dst.put_slice(h);
                }
                dst.put_u32_le(m.groups.len() as u32);
                dst.put_slice(m.groups);
                dst.put_u32_le(m.payload.len() as u32);
                dst.put_slice(m.payload);
            }
            Self::Plain { seq, pattern, on } => {
                dst.put_u8(REC_PLAIN);
                dst.put_u64_le(*seq);
                put_short(dst, pattern);
                dst.put_u8(u8::from(*on));
            }
            Self::Members { seq, pattern, group, members } => {
                dst.put_u8(REC_MEMBERS);
                dst.put_u64_le(*seq);
                put_short(dst, pattern);
                put_short(dst, group);
                dst.put_u32_le(*members);
            }
            Self::Credit { limit } => {
                dst.put_u8(REC_CREDIT);
                dst.put_u64_le(*limit);
            }
        }
    }
}

/// A frame read from Redis: its header and its records, decoded one at a
/// time as the receiver goes.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub header: FrameHeader<'a>,
    records: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Reads the header; the records stay to be read.
    pub(crate) fn decode(mut src: &'a [u8]) -> Result<Self, WireError> {
        let kind = prefix(&mut src)?;
        if kind != KIND_FRAME && kind != KIND_ASIDE {
            return Err(WireError::Kind(kind));
        }
        let origin = node(&mut src)?;
        let header = FrameHeader {
            origin,
            in_path: kind == KIND_FRAME,
            to_incarnation: u64_le(&mut src)?,
            path_seq: u64_le(&mut src)?,
            msgs_before: u64_le(&mut src)?,
            bytes_before: u64_le(&mut src)?,
            interest_seq: u64_le(&mut src)?,
        };
        Ok(Self { header, records: src })
    }

    /// The records, in order; an error ends them.
    pub(crate) fn records(&self) -> impl Iterator<Item = Result<Record<'a>, WireError>> {
        let mut src = self.records;
        let mut failed = false;
        std::iter::from_fn(move || {
            if src.is_empty() || failed {
                return None;
            }
            let record = record(&mut src);
            failed = record.is_err();
            Some(record)
        })
    }
}

fn record<'a>(src: &mut &'a [u8]) -> Result<Record<'a>, WireError> {
    Ok(match u8_of(src)? {
        REC_MESSAGE => {
            let flags = u8_of(src)?;
            let topic = short(src)?;
            let reply_to = short(src)?;
            let requester = if reply_to.is_empty() { 0 } else { u64_le(src)? };
            let headers = match flags & MSG_HEADERS {
                0 => None,
                _ => {
                    let len = usize::from(take(src, 2)?.get_u16_le());
                    Some(take(src, len)?)
                }
            };
            let groups_len = u32_le(src)? as usize;
            let groups = take(src, groups_len)?;
            let len = u32_le(src)? as usize;
            let payload = take(src, len)?;
            let plain = flags & MSG_PLAIN != 0;
            Record::Message(WireMessage {
                topic,
                reply_to,
                requester,
                headers,
                payload,
                plain,
                groups,
            })
        }
        REC_PLAIN => {
            let seq = u64_le(src)?;
            let pattern = short(src)?;
            Record::Plain { seq, pattern, on: u8_of(src)? != 0 }
        }
        REC_MEMBERS => Record::Members {
            seq: u64_le(src)?,
            pattern: short(src)?,
            group: short(src)?,
            members: u32_le(src)?,
        },
        REC_CREDIT => Record::Credit { limit: u64_le(src)? },
        other => return Err(WireError::Kind(other)),
    })
}

impl<'a> Announce<'a> {
    pub(crate) fn presence(&self) -> &Presence<'a> {
        match self {
            Self::Hello(p) | Self::Alive(p) | Self::Bye(p) => p,
        }
    }

    pub(crate) fn encode(&self, dst: &mut impl BufMut) {
        let (kind, p) = match self {
            Self::Hello(p) => (KIND_HELLO, p),
            Self::Alive(p) => (KIND_ALIVE, p),
            Self::Bye(p) => (KIND_BYE, p),
        };
        dst.put_slice(MAGIC);
        dst.put_u8(VERSION);
        dst.put_u8(kind);
        put_node(dst, p.node);
        dst.put_u64_le(p.interest_seq);
        dst.put_u32_le(p.max_frame);
    }

    pub(crate) fn decode(mut src: &'a [u8]) -> Result<Self, WireError> {
        let kind = prefix(&mut src)?;
        let presence = Presence {
            node: node(&mut src)?,
            interest_seq: u64_le(&mut src)?,
            max_frame: u32_le(&mut src)?,
        };
        match kind {
            KIND_HELLO => Ok(Self::Hello(presence)),
            KIND_ALIVE => Ok(Self::Alive(presence)),
            KIND_BYE => Ok(Self::Bye(presence)),
            other => Err(WireError::Kind(other)),
        }
    }
}

/// Checks magic and version; returns the kind.
fn prefix(src: &mut &[u8]) -> Result<u8, WireError> {
    if take(src, 2)? != MAGIC {
        return Err(WireError::Magic);
    }
    match u8_of(src)? {
        VERSION => u8_of(src),
        other => Err(WireError::Version(other)),
    }
}

fn put_node(dst: &mut impl BufMut, node: NodeId<'_>) {
    put_short(dst, node.name);
    dst.put_u64_le(node.incarnation);
}

fn node<'a>(src: &mut &'a [u8]) -> Result<NodeId<'a>, WireError> {
    Ok(NodeId { name: short(src)?, incarnation: u64_le(src)? })
}

fn put_short(dst: &mut impl BufMut, s: &str) {
    dst.put_u8(s.len() as u8);
    dst.put_slice(s.as_bytes());
}

fn take<'b>(src: &mut &'b [u8], n: usize) -> Result<&'b [u8], WireError> {
    if src.len() < n {
        return Err(WireError::Truncated);
    }
    let (head, tail) = src.split_at(n);
    *src = tail;
    Ok(head)
}

fn short<'b>(src: &mut &'b [u8]) -> Result<&'b str, WireError> {
    let len = usize::from(u8_of(src)?);
    std::str::from_utf8(take(src, len)?).map_err(|_| WireError::Utf8)
}

fn u8_of(src: &mut &[u8]) -> Result<u8, WireError> {
    Ok(take(src, 1)?[0])
}

fn u32_le(src: &mut &[u8]) -> Result<u32, WireError> {
    Ok(take(src, 4)?.get_u32_le())
}

fn u64_le(src: &mut &[u8]) -> Result<u64, WireError> {
    Ok(take(src, 8)?.get_u64_le())
}

#[cfg(test)]
mod tests;

use super::*;

fn me() -> NodeId<'static> {
    NodeId { name: "n1", incarnation: 0x0102_0304_0506_0708 }
}

fn frame_with(records: &[Record<'_>]) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = FrameHeader {
        origin: me(),
        in_path: true,
        to_incarnation: 9,
        path_seq: 3,
        msgs_before: 40,
        bytes_before: 4096,
        interest_seq: 7,
    };
    put_header(&mut buf, &header);
    assert_eq!(buf.len(), header_len("n1"));
    for r in records {
        let before = buf.len();
        r.encode(&mut buf);
        assert_eq!(buf.len() - before, r.encoded_len(), "{r:?}");
    }
    buf
}

#[test]
fn frames_round_trip() {
    let records = [
        Record::Plain { seq: 6, pattern: "a.*", on: true },
        Record::Members { seq: 7, pattern: "q.>", group: "workers", members: 3 },
        Record::Credit { limit: 1 << 40 },
        Record::Message(WireMessage {
            topic: "a.b",
            reply_to: "",
            requester: 0,
            headers: None,
            payload: b"hi",
            plain: true,
            groups: &[],
        }),
        Record::Message(WireMessage {
            topic: "q.x",
            reply_to: "_INBOX.1",
            requester: 42,
            headers: Some(&[1, 1, b'k', 0, 0]),
            payload: &[],
            plain: false,
            groups: b"\x07workers",
        }),
    ];
    let buf = frame_with(&records);
    let frame = Frame::decode(&buf).expect("decodes");
    assert_eq!(frame.header.origin, me());
    assert_eq!((frame.header.to_incarnation, frame.header.path_seq), (9, 3));
    assert_eq!((frame.header.msgs_before, frame.header.interest_seq), (40, 7));
    assert_eq!(frame.header.bytes_before, 4096);
    let decoded: Vec<_> = frame.records().collect::<Result<_, _>>().expect("records decode");
    assert_eq!(decoded, records);
}

/// The bytes of a frame are a contract between nodes of different
/// versions: this vector must never change.
#[test]
fn frame_vector() {
    let buf = frame_with(&[
        Record::Plain { seq: 1, pattern: "a", on: true },
        Record::Message(WireMessage {
            topic: "a",
            reply_to: "",
            requester: 0,
            headers: None,
            payload: b"x",
            plain: true,
            groups: &[],
        }),
        Record::Credit { limit: 1 << 20 },
    ]);
    let expected: Vec<u8> = [
        &b"cc\x01\x00"[..],                      // magic, version, frame
        b"\x02n1",                               // origin name
        &0x0102_0304_0506_0708u64.to_le_bytes(), // origin incarnation
        &9u64.to_le_bytes(),                     // destination incarnation
        &3u64.to_le_bytes(),                     // path sequence
        &40u64.to_le_bytes(),                    // messages before
        &4096u64.to_le_bytes(),                  // bytes before
        &7u64.to_le_bytes(),                     // interest sequence
        b"\x02",                                 // plain interest
        &1u64.to_le_bytes(),
        b"\x01a\x01",
        b"\x01\x01",         // message, plain
        b"\x01a\x00",        // topic, no reply-to
        &0u32.to_le_bytes(), // no groups
        &1u32.to_le_bytes(),
        b"x",
        b"\x04", // credit
        &(1u64 << 20).to_le_bytes(),
    ]
    .concat();
    assert_eq!(buf, expected);
}

#[test]
fn frames_aside_say_so() {
    let mut buf = Vec::new();
    let header = FrameHeader {
        origin: me(),
        in_path: false,
        to_incarnation: 9,
        path_seq: 0,
        msgs_before: 0,
        bytes_before: 0,
        interest_seq: 0,
    };
    put_header(&mut buf, &header);
    Record::Credit { limit: 5 }.encode(&mut buf);
    assert_eq!(&buf[..4], b"cc\x01\x04");
    let frame = Frame::decode(&buf).expect("decodes");
    assert!(!frame.header.in_path);
    assert_eq!(frame.records().collect::<Vec<_>>(), [Ok(Record::Credit { limit: 5 })]);
}

#[test]
fn announcements_round_trip() {
    let p = Presence { node: me(), interest_seq: 12, max_frame: 1 << 20 };
    for a in [Announce::Hello(p), Announce::Alive(p), Announce::Bye(p)] {
        let mut buf = Vec::new();
        a.encode(&mut buf);
        assert_eq!(Announce::decode(&buf), Ok(a));
    }
}

#[test]
fn bad_bytes_are_errors_never_panics() {
    assert_eq!(Frame::decode(b"xx\x01\x00").err(), Some(WireError::Magic));
    assert_eq!(Frame::decode(b"cc\x02\x00").err(), Some(WireError::Version(2)));
    assert_eq!(Frame::decode(b"cc\x01\x01").err(), Some(WireError::Kind(1)));
    assert_eq!(Frame::decode(b"cc\x01\x00\x02n").err(), Some(WireError::Truncated));
    assert_eq!(Announce::decode(b"cc\x01\x09\x00").err(), Some(WireError::Truncated));
    let buf = frame_with(&[Record::Plain { seq: 1, pattern: "a", on: true }]);
    // Every truncation of a valid frame is an error or fewer records.
    for end in 0..buf.len() {
        if let Ok(frame) = Frame::decode(&buf[..end]) {
            let records: Vec<_> = frame.records().collect();
            assert!(records.iter().all(|r| r.is_err()) || records.is_empty(), "{end}");
        }
    }
    let mut unknown = frame_with(&[]);
    unknown.push(0x7f);
    let frame = Frame::decode(&unknown).expect("header");
    assert_eq!(frame.records().collect::<Vec<_>>(), [Err(WireError::Kind(0x7f))]);
    // Random bytes after a valid header never panic.
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2_000 {
        let mut buf = frame_with(&[]);
        buf.extend((0..rng.usize(0..64)).map(|_| rng.u8(..)));
        if let Ok(frame) = Frame::decode(&buf) {
            for _ in frame.records() {}
        }
    }
}

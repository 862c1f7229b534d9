use super::*;

/// A client frame: `op` with FIN, masked, `payload` of at most 125 bytes
/// unless `long`.
fn client_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![op];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn drain(ws: &mut Ws) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = ws.take(&mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The close code of the close frame in `control`, if there is one.
fn close_code(control: &[u8]) -> Option<u16> {
    let at = control.iter().position(|&b| b == 0x88)?;
    let code = control.get(at + 2..at + 4)?;
    Some(u16::from_be_bytes([code[0], code[1]]))
}

#[test]
fn binary_payloads_are_one_stream_across_messages_and_reads() {
    let mut ws = Ws::new(1 << 20);
    let mut bytes = client_frame(0x82, b"hello ");
    bytes.extend(client_frame(0x82, b"world"));
    let split = bytes.len() - 3;
    ws.feed(&bytes[..split]);
    let mut got = drain(&mut ws);
    ws.feed(&bytes[split..]);
    got.extend(drain(&mut ws));
    assert_eq!(got, b"hello world");
    assert!(ws.closed().is_none());
}

#[test]
fn fragmented_messages_arrive_whole_and_pings_are_answered() {
    let mut ws = Ws::new(1 << 20);
    let mut bytes = client_frame(0x02, b"frag");
    bytes.extend(client_frame(0x89, b"pi"));
    bytes.extend(client_frame(0x80, b"ment"));
    ws.feed(&bytes);
    assert_eq!(drain(&mut ws), b"fragment");
    assert_eq!(ws.control().as_slice(), b"\x8a\x02pi");
}

#[test]
fn bad_frames_close_with_their_codes() {
    let long = vec![b'x'; 300];
    let cases: [(Vec<u8>, u16); 7] = [
        (vec![0x82, 0x01, b'x'], 1002),           // not masked
        (client_frame(0x81, b"text"), 1003),      // text
        (client_frame(0xC2, b"x"), 1002),         // reserved bit
        (client_frame(0x83, b"x"), 1002),         // reserved opcode
        (client_frame(0x09, b"x"), 1002),         // fragmented control frame
        (client_frame(0x89, &long[..126]), 1002), // control frame too long
        (client_frame(0x82, &long), 1009),        // over the size limit
    ];
    for (bytes, code) in cases {
        let mut ws = Ws::new(256);
        ws.feed(&bytes);
        assert_eq!(ws.closed().map(|c| c.code), Some(code), "{bytes:02x?}");
        assert_eq!(close_code(ws.control()), Some(code), "{bytes:02x?}");
        // Nothing more is taken in.
        ws.feed(&client_frame(0x82, b"after"));
        assert!(!ws.has_pending());
    }
}

#[test]
fn a_client_close_is_answered_and_ends_the_session() {
    let mut ws = Ws::new(1 << 20);
    ws.feed(&client_frame(0x88, &1000u16.to_be_bytes()));
    assert_eq!(ws.closed().map(|c| c.code), Some(1000));
    assert_eq!(close_code(ws.control()), Some(1000));
    let mut bad = Ws::new(1 << 20);
    bad.feed(&client_frame(0x88, &1005u16.to_be_bytes()));
    assert_eq!(close_code(bad.control()), Some(1002), "a code the client may not send");
}

#[test]
fn frame_headers_cover_every_length_form() {
    for (len, head) in [(5, vec![0x82, 5]), (300, vec![0x82, 126, 1, 44])] {
        let mut out = Vec::new();
        Ws::frame_header(len, &mut out);
        assert_eq!(out, head);
    }
    let mut out = Vec::new();
    Ws::frame_header(70_000, &mut out);
    assert_eq!(out[..2], [0x82, 127]);
    assert_eq!(out.len(), 10);
}

#[test]
fn a_close_reason_that_is_not_utf8_closes_with_1007() {
    let mut ws = Ws::new(1 << 20);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0xff, 0xfe]);
    ws.feed(&client_frame(0x88, &payload));
    assert_eq!(close_code(ws.control()), Some(1007));
}

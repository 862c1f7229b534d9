#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
use common::*;

#[test]
fn pub_sub_between_two_connections() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr);
    sub.sub(1, "a.b");
    assert!(sub.flush().is_empty());
    let mut publ = Client::connect(addr);
    publ.publish("a.b", b"hello");
    publ.flush();
    assert_eq!(
        sub.recv(),
        Got::Msg { sid: 1, topic: "a.b".into(), reply_to: "".into(), payload: b"hello".to_vec() }
    );
    drop(sub);
    drop(publ);
    wait_idle(&broker);
    broker.shutdown();
    broker.wait().unwrap();
}

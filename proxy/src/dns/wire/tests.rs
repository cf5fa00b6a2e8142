use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// A standard query (class IN, recursion desired), as a stub resolver sends it.
fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[RD, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let len = label.len().min(63);
        out.push(len as u8);
        out.extend_from_slice(&label.as_bytes()[..len]);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

#[test]
fn a_query_reads_back_lowercased_without_the_trailing_dot() {
    let msg = build_query(0xBEEF, "A.Nats.SVC.cluster.local.", 28);
    let query = parse_query(&msg).unwrap();
    assert_eq!(query.id, 0xBEEF);
    assert_eq!(query.name(), b"a.nats.svc.cluster.local");
    assert_eq!(query.qtype, 28);
    assert_eq!(query.question_end, msg.len());
}

#[test]
fn the_root_is_the_empty_name() {
    let query = parse_query(&build_query(1, ".", 2)).unwrap();
    assert_eq!(query.name(), b"");
}

#[test]
fn an_error_answer_echoes_id_question_and_flags() {
    let mut msg = build_query(0x1234, "gone.example.com", 1);
    // An EDNS OPT record in the additional section is not echoed.
    msg[11] = 1;
    msg.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    msg[3] |= CD;
    let query = parse_query(&msg).unwrap();
    let answer = error_answer(&msg, &query, 3);
    assert_eq!(&answer[..2], &[0x12, 0x34]);
    assert_eq!(answer[2], QR | RD);
    assert_eq!(answer[3], RA | CD | 3);
    assert_eq!(&answer[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&answer[12..], &msg[12..query.question_end]);
    assert_eq!(rcode(&answer), Some(3));
    assert!(!is_truncated(&answer));
    assert!(is_truncated(&truncated_answer(&msg, &query)));
    assert_eq!(message_id(&answer), Some(0x1234));
}

#[test]
fn what_is_not_a_plain_query_is_refused_by_name() {
    let ok = build_query(1, "a.example", 1);
    assert_eq!(parse_query(&ok[..11]), Err(WireError::Short(11)));
    let mut response = ok.clone();
    response[2] |= QR;
    assert_eq!(parse_query(&response), Err(WireError::Response));
    let mut notify = ok.clone();
    notify[2] |= 4 << 3;
    assert_eq!(parse_query(&notify), Err(WireError::Opcode(4)));
    let mut empty = ok.clone();
    empty[5] = 0;
    assert_eq!(parse_query(&empty), Err(WireError::NoQuestion));
    assert_eq!(parse_query(&ok[..ok.len() - 1]), Err(WireError::Truncated));
    assert_eq!(parse_query(&ok[..14]), Err(WireError::Truncated));
    let mut compressed = ok[..12].to_vec();
    compressed.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    assert_eq!(parse_query(&compressed), Err(WireError::Compressed));
    let mut long_label = ok[..12].to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(parse_query(&long_label), Err(WireError::LongLabel));
    let long_name = ["a".repeat(63).as_str(); 5].join(".");
    assert_eq!(
        parse_query(&build_query(1, &long_name, 1)),
        Err(WireError::LongName)
    );
    let longest = [
        "a".repeat(63).as_str(),
        &"b".repeat(63),
        &"c".repeat(63),
        &"d".repeat(61),
    ]
    .join(".");
    assert_eq!(
        parse_query(&build_query(1, &longest, 1))
            .unwrap()
            .name()
            .len(),
        253
    );
}

/// Random and mutated messages never panic, and whatever parses answers
/// with a message that parses as the same question.
#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(53);
    let seed = build_query(7, "_grpc._tcp.api.shop.svc.cluster.local", 33);
    for round in 0..20_000 {
        let msg: Vec<u8> = if round % 2 == 0 {
            let len = rng.random_range(0..64);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let mut m = seed.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..m.len());
                m[i] = rng.random();
            }
            m.truncate(rng.random_range(0..=m.len()));
            m
        };
        if let Ok(query) = parse_query(&msg) {
            let answer = error_answer(&msg, &query, 2);
            let mut as_query = answer.clone();
            as_query[2] &= !QR;
            let again = parse_query(&as_query).unwrap();
            assert_eq!((again.name(), again.qtype), (query.name(), query.qtype));
        }
    }
}

use super::*;

fn rec(i: u32) -> Vec<u8> {
    format!("{{\"n\":{i}}}").into_bytes()
}

fn drain(spool: &mut Spool, batch: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(b) = spool.peek(batch).expect("peek must succeed") {
        out.extend(b.records.iter().cloned());
        spool.ack(&b).expect("ack must succeed");
    }
    out
}

#[test]
fn records_come_back_in_order_and_once_acked_are_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, report) = Spool::open(dir.path(), 1 << 20).expect("open");
    assert_eq!(report, OpenReport::default());
    for i in 0..1000 {
        assert_eq!(s.append(&rec(i)).expect("append"), 0);
    }
    assert_eq!(s.pending(), 1000);
    let got = drain(&mut s, 64);
    assert_eq!(got, (0..1000).map(rec).collect::<Vec<_>>());
    assert_eq!(s.pending(), 0);
    assert_eq!(s.peek(10).expect("peek").map(|b| b.records.len()), None);
}

#[test]
fn unacked_records_survive_reopen_and_acked_ones_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).expect("open");
        for i in 0..300 {
            s.append(&rec(i)).expect("append");
        }
        let b = s.peek(100).expect("peek").expect("a batch");
        s.ack(&b).expect("ack");
        // Read but not acknowledged: must come back after the restart.
        let _ = s.peek(50).expect("peek");
        s.flush().expect("flush");
    }
    let (mut s, report) = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(report.pending, 200);
    assert_eq!(report.corrupt, 0);
    let got = drain(&mut s, 64);
    assert_eq!(got, (100..300).map(rec).collect::<Vec<_>>());
}

#[test]
fn torn_write_at_the_tail_is_cut_and_earlier_records_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).expect("open");
        for i in 0..10 {
            s.append(&rec(i)).expect("append");
        }
        s.flush().expect("flush");
    }
    let seg = segment_path(dir.path(), 0);
    let mut f = OpenOptions::new().append(true).open(&seg).expect("segment");
    f.write_all(&[200, 0, 0, 0, 1, 2]).expect("torn header");
    drop(f);
    let (mut s, report) = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(report.pending, 10);
    assert_eq!(report.corrupt, 1);
    s.append(&rec(10)).expect("append after repair");
    assert_eq!(drain(&mut s, 7), (0..11).map(rec).collect::<Vec<_>>());
}

#[test]
fn full_spool_drops_oldest_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max = 64 * 1024;
    let (mut s, _) = Spool::open(dir.path(), max).expect("open");
    let payload = vec![b'x'; 1000 - HEADER as usize];
    let mut dropped = 0;
    for _ in 0..200 {
        dropped += s.append(&payload).expect("append");
    }
    assert!(
        s.bytes() <= max,
        "spool holds {} bytes over {max}",
        s.bytes()
    );
    assert_eq!(
        dropped + s.pending(),
        200,
        "every record is pending or counted"
    );
    assert!(dropped > 0, "200 KB into 64 KiB must drop some");
    let got = drain(&mut s, 1000);
    assert_eq!(got.len() as u64, 200 - dropped);
}

#[test]
fn drop_during_delivery_does_not_double_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = Spool::open(dir.path(), 64 * 1024).expect("open");
    let payload = vec![b'y'; 500];
    for _ in 0..20 {
        s.append(&payload).expect("append");
    }
    let inflight = s.peek(5).expect("peek").expect("batch");
    let mut dropped = 0;
    for _ in 0..300 {
        dropped += s.append(&payload).expect("append");
    }
    s.ack(&inflight).expect("ack after drop");
    assert_eq!(
        dropped + s.pending(),
        320,
        "dropped {dropped}, pending {}",
        s.pending()
    );
}

#[test]
fn damaged_record_mid_segment_is_skipped_and_counted_not_spun_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = Spool::open(dir.path(), 1 << 20).expect("open");
    for i in 0..10 {
        s.append(&rec(i)).expect("append");
    }
    s.flush().expect("flush");
    // Flip a payload byte of the first record while the spool is open.
    let seg = segment_path(dir.path(), 0);
    let mut bytes = fs::read(&seg).expect("segment");
    bytes[HEADER as usize] ^= 0xff;
    fs::write(&seg, bytes).expect("damage");
    assert_eq!(s.peek(5).expect("peek").map(|b| b.records.len()), None);
    assert_eq!(s.take_lost(), 10);
    assert_eq!(s.pending(), 0);
    s.append(&rec(10)).expect("append after damage");
    assert_eq!(drain(&mut s, 5), vec![rec(10)]);
}

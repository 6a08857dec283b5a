//! Properties checked on arbitrary bytes, by the fuzz targets in `fuzz/` and by the corpus
//! replay test (`engine/tests/fuzz_corpus.rs`). Each panics if the property fails.

use std::path::Path;
use std::sync::Arc;

use crate::config::Limits;
use crate::fs::sim::SimFs;
use crate::fs::{Fs, OpenMode};
use crate::log::frame::{self, Decoded, FILE_HEADER_LEN, FileHeader};
use crate::log::handles::log_name;
use crate::log::recovery;
use crate::log::scan::{self, ScanEnd};
use crate::log::store::{Durability, meta_name};
use crate::meta::Meta;
use crate::store::{ContentType, Expiry};

/// The frame decoder on arbitrary bytes: never panics; a record is only returned whole, and
/// re-encoding it gives back exactly the bytes it was decoded from.
pub fn frame_decode(data: &[u8]) {
    let _ = frame::decode_header(data);
    let mut at = 0usize;
    while at <= data.len() {
        let rest = &data[at..];
        // Without the CRC check: never a panic, and a record the check accepts is read the
        // same way.
        let trusted = frame::decode_trusted(rest, rest.len() as u64);
        match frame::decode(rest, rest.len() as u64) {
            Decoded::Record { record, frame_len } => {
                assert!(
                    matches!(&trusted, Decoded::Record { record: r, frame_len: n } if *n == frame_len && *r == record),
                    "a checked record decodes differently without the check"
                );
                assert!(frame_len <= rest.len(), "record longer than its input");
                let mut again = Vec::new();
                let n = frame::encode(&record, &mut again);
                assert_eq!(n, frame_len);
                assert_eq!(&again[..], &rest[..frame_len], "decode then encode changed bytes");
                at += frame_len;
            }
            Decoded::NeedMore(n) => {
                assert!(n > rest.len(), "asked for bytes it already had");
                break;
            }
            Decoded::CleanEnd | Decoded::TornTail | Decoded::Corrupt => break,
        }
    }
}

/// Recovery over a log whose records are arbitrary bytes: never panics, and the recovered
/// stream is exactly the longest prefix of whole valid records (a torn tail is cut; anything
/// after corruption is kept on disk but not served).
pub fn log_recovery(data: &[u8]) {
    let dir = Path::new("/data");
    let fs = SimFs::new();
    let incarnation = 1;
    let meta = Meta {
        incarnation,
        created_ms: 1,
        expiry: Expiry::Never,
        content_type: ContentType::new("application/octet-stream"),
        name: "fuzzed".into(),
        fork: None,
    };
    let mut log = frame::encode_header(FileHeader { incarnation, base: 0 }).to_vec();
    log.extend_from_slice(data);
    let files = [
        (log_name(incarnation), log.clone()),
        (meta_name(incarnation), meta.encode()),
        (recovery::LAYOUT_FILE.to_owned(), recovery::LAYOUT_V2.to_vec()),
    ];
    for (name, bytes) in files {
        let f = fs.open(&dir.join(name), OpenMode::CreateNew).expect("sim create");
        f.write_all_at(&bytes, 0).expect("sim write");
    }
    // What a plain scan of the original bytes finds: the expected prefix.
    let original = fs.open(&dir.join(log_name(incarnation)), OpenMode::Read).expect("sim open");
    let mut expected = 0usize;
    let first = scan::scan(original.as_ref(), FILE_HEADER_LEN as u64, |_, r, _| {
        expected += r.payload.len()
    })
    .expect("sim scan");
    let fs: Arc<dyn Fs> = Arc::new(fs);
    let options = recovery::Options { max_open_files: 4, journal_bytes: 64 << 10 };
    let (_, _, report) = recovery::open(
        fs.clone(),
        dir,
        Durability::PowerLoss,
        Limits::default(),
        options,
        0,
        Arc::default(),
    )
    .expect("recovery");
    assert_eq!(report.streams, 1, "the stream is always loaded");
    let after = fs.open(&dir.join(log_name(incarnation)), OpenMode::Read).expect("sim open");
    let mut kept = 0usize;
    let second =
        scan::scan(after.as_ref(), FILE_HEADER_LEN as u64, |_, r, _| kept += r.payload.len())
            .expect("sim scan");
    assert_eq!(kept, expected, "recovery kept exactly the valid prefix");
    assert_eq!(second.end, first.end);
    match first.stop {
        ScanEnd::TornTail { .. } => assert_eq!(second.stop, ScanEnd::Clean, "a torn tail is cut"),
        ScanEnd::Clean => assert_eq!(second.stop, ScanEnd::Clean),
        ScanEnd::Corrupt { at } => {
            assert_eq!(second.stop, ScanEnd::Corrupt { at }, "corruption is kept")
        }
    }
}

/// The journal scan on arbitrary bytes after a valid header: never panics; the entries it
/// returns re-encode to exactly the bytes they were read from, one after another from the
/// header on; and replaying them writes only into logs that exist (a journal never creates a
/// stream).
pub fn journal_scan(data: &[u8]) {
    use crate::log::journal;
    let epoch = data.first().map_or(0, |&b| u64::from(b % 4));
    let mut file = journal::encode_header(epoch).to_vec();
    file.extend_from_slice(data.get(1..).unwrap_or_default());
    let _ = journal::scan(data);
    let found = journal::scan(&file);
    assert_eq!(found.epoch, Some(epoch));
    let mut again = journal::encode_header(epoch).to_vec();
    for (seq, pieces) in found.entries.iter().enumerate() {
        journal::encode_entry(epoch, seq as u64, pieces.iter().cloned(), &mut again);
    }
    assert_eq!(again.len(), found.end, "entries end where the scan says");
    assert_eq!(&again[..], &file[..found.end], "scan then encode changed bytes");

    let dir = Path::new("/data");
    let fs = SimFs::new();
    fs.create_dir_all(dir).expect("sim dir");
    let j = fs.open(&dir.join(journal::JOURNAL_NAME), OpenMode::CreateNew).expect("sim create");
    j.write_all_at(&file, 0).expect("sim write");
    let existing = log_name(1);
    fs.open(&dir.join(&existing), OpenMode::CreateNew).expect("sim create");
    // Pieces may name positions far past the end; keep the simulated file small.
    let small = found.entries.iter().flatten().all(|p| p.pos < 1 << 20);
    if small {
        let replayed = journal::replay(&fs, dir).expect("sim replay");
        assert_eq!(replayed.entries, found.entries.len() as u64);
        let logs: Vec<String> =
            fs.list(dir).expect("sim list").into_iter().filter(|n| n.ends_with(".log")).collect();
        assert_eq!(logs, vec![existing], "replay created a log");
    }
}

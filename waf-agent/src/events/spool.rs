//! The on-disk spool of one sink: every event bound for the sink is appended here first and
//! removed only once the sink has taken it, so a sink outage or an agent restart loses
//! nothing and delivery resumes in order.
//!
//! Layout: segment files `{id:020}.seg` holding records `len: u32 LE | crc32: u32 LE |
//! payload`, and a `cursor` file naming the first record not yet delivered
//! (`segment offset index`), replaced atomically after each delivery. A torn record at the
//! end of a segment (a crash mid-write) is cut off when the spool is opened. When the spool
//! grows past its limit, whole segments are dropped oldest first and the number of events
//! lost is returned to the caller, which reports it.
//!
//! Appends are written through to the page cache (they survive a restart of the agent) but
//! not synced per record: a power loss can take the last moments of events.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

const HEADER: u64 = 8;
/// A record bigger than this is taken as corruption, not as a length.
pub const MAX_RECORD: u32 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A spool file could not be read or written.
    #[error("spool i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// One event is larger than a spool record may be.
    #[error("event of {0} bytes is too large to spool")]
    TooLarge(usize),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    segment: u64,
    offset: u64,
    /// Records before `offset` in the segment.
    index: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    records: u64,
}

/// Records read but not yet acknowledged; hand it back to `ack` once delivered.
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<Vec<u8>>,
    ends: Vec<Position>,
}

/// What opening found and repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// Records waiting from a previous run.
    pub pending: u64,
    /// Records lost to corruption or a torn write.
    pub corrupt: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: Option<BufWriter<File>>,
    cursor: Position,
    pending: u64,
    bytes: u64,
    next_id: u64,
    lost: u64,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Reads one record at the reader's position: `Ok(None)` at a clean end, `Err(())` on a torn
/// or corrupt record.
fn read_record(r: &mut impl Read) -> io::Result<Option<Result<Vec<u8>, ()>>> {
    let mut header = [0u8; HEADER as usize];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..])?;
        if n == 0 {
            return Ok(if got == 0 { None } else { Some(Err(())) });
        }
        got += n;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return Ok(Some(Err(())));
    }
    let mut payload = vec![0u8; len as usize];
    match r.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(Err(()))),
        Err(e) => return Err(e),
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(Some(Err(())));
    }
    Ok(Some(Ok(payload)))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, repairing a torn tail.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, OpenReport), SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(id) = stem.parse::<u64>() {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let saved = read_cursor(dir);
        let mut report = OpenReport::default();
        let mut segments = VecDeque::new();
        let mut cursor = None;
        for id in &ids {
            let path = segment_path(dir, *id);
            if saved.is_some_and(|c| *id < c.segment) {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let mut reader = io::BufReader::new(&mut file);
            let (mut offset, mut records) = (0u64, 0u64);
            let mut unread = 0u64;
            let start = saved.filter(|c| c.segment == *id);
            loop {
                match read_record(&mut reader).map_err(io_err(&path))? {
                    None => break,
                    Some(Ok(payload)) => {
                        if start.is_none_or(|c| offset >= c.offset) {
                            unread += 1;
                        }
                        offset += HEADER + payload.len() as u64;
                        records += 1;
                    }
                    Some(Err(())) => {
                        report.corrupt += 1;
                        break;
                    }
                }
            }
            drop(reader);
            file.set_len(offset).map_err(io_err(&path))?;
            if cursor.is_none() {
                cursor = Some(match start {
                    Some(c) if c.offset <= offset => c,
                    _ => Position {
                        segment: *id,
                        offset: 0,
                        index: 0,
                    },
                });
            }
            report.pending += unread;
            segments.push_back(Segment {
                id: *id,
                bytes: offset,
                records,
            });
        }
        let next_id = ids.last().map_or(0, |l| l + 1);
        let cursor = cursor.unwrap_or(Position {
            segment: next_id,
            offset: 0,
            index: 0,
        });
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(4096, 8 * 1024 * 1024),
            segments,
            writer: None,
            cursor,
            pending: report.pending,
            bytes,
            next_id,
            lost: 0,
        };
        Ok((spool, report))
    }

    /// Records waiting for delivery.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes on disk, delivered records of the oldest segment included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record; returns how many undelivered records were dropped to stay under
    /// the size limit.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or(SpoolError::TooLarge(payload.len()))?;
        let need_new = match self.segments.back() {
            None => true,
            Some(s) => s.bytes >= self.segment_bytes,
        };
        if need_new {
            self.rotate()?;
        }
        if self.writer.is_none() {
            let id = self.segments.back().map_or(self.next_id, |s| s.id);
            let path = segment_path(&self.dir, id);
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.writer = Some(BufWriter::with_capacity(64 * 1024, file));
        }
        let last = self
            .segments
            .back_mut()
            .map(|s| s.id)
            .unwrap_or(self.next_id);
        let path = segment_path(&self.dir, last);
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&len.to_le_bytes()).map_err(io_err(&path))?;
            w.write_all(&crc32fast::hash(payload).to_le_bytes())
                .map_err(io_err(&path))?;
            w.write_all(payload).map_err(io_err(&path))?;
        }
        let size = HEADER + u64::from(len);
        if let Some(s) = self.segments.back_mut() {
            s.bytes += size;
            s.records += 1;
        }
        self.bytes += size;
        self.pending += 1;
        self.enforce_limit()
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.flush()?;
        self.writer = None;
        let id = self.next_id;
        self.next_id += 1;
        if self.segments.is_empty() {
            self.cursor = Position {
                segment: id,
                offset: 0,
                index: 0,
            };
        }
        self.segments.push_back(Segment {
            id,
            bytes: 0,
            records: 0,
        });
        Ok(())
    }

    fn enforce_limit(&mut self) -> Result<u64, SpoolError> {
        let mut dropped = 0;
        while self.bytes > self.max_bytes {
            if self.segments.len() == 1 {
                self.rotate()?;
            }
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            let unread = if oldest.id == self.cursor.segment {
                oldest.records - self.cursor.index
            } else {
                oldest.records
            };
            dropped += unread;
            self.pending -= unread;
            self.bytes -= oldest.bytes;
            let path = segment_path(&self.dir, oldest.id);
            fs::remove_file(&path).map_err(io_err(&path))?;
            if let Some(next) = self.segments.front() {
                if self.cursor.segment <= oldest.id {
                    self.cursor = Position {
                        segment: next.id,
                        offset: 0,
                        index: 0,
                    };
                }
            }
        }
        if dropped > 0 {
            self.save_cursor()?;
        }
        Ok(dropped)
    }

    /// Pushes buffered appends to the files.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if let Some(w) = self.writer.as_mut() {
            w.flush().map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// Reads up to `max` undelivered records, oldest first, without removing them.
    pub fn peek(&mut self, max: usize) -> Result<Option<Batch>, SpoolError> {
        if self.pending == 0 || max == 0 {
            return Ok(None);
        }
        self.flush()?;
        let mut batch = Batch {
            records: Vec::new(),
            ends: Vec::new(),
        };
        let mut pos = self.cursor;
        let mut skip = None;
        for seg in self.segments.iter().filter(|s| s.id >= self.cursor.segment) {
            if seg.id != pos.segment {
                pos = Position {
                    segment: seg.id,
                    offset: 0,
                    index: 0,
                };
            }
            if pos.offset >= seg.bytes {
                continue;
            }
            let path = segment_path(&self.dir, seg.id);
            let mut file = File::open(&path).map_err(io_err(&path))?;
            file.seek(SeekFrom::Start(pos.offset))
                .map_err(io_err(&path))?;
            let mut reader = io::BufReader::new(file).take(seg.bytes - pos.offset);
            let mut damaged = false;
            while batch.records.len() < max {
                match read_record(&mut reader).map_err(io_err(&path))? {
                    Some(Ok(payload)) => {
                        pos.offset += HEADER + payload.len() as u64;
                        pos.index += 1;
                        batch.records.push(payload);
                        batch.ends.push(pos);
                    }
                    None | Some(Err(())) => {
                        damaged = pos.offset < seg.bytes;
                        break;
                    }
                }
            }
            if batch.records.len() >= max {
                break;
            }
            if damaged {
                if batch.records.is_empty() {
                    skip = Some((
                        seg.id,
                        seg.bytes,
                        seg.records,
                        seg.records.saturating_sub(pos.index),
                    ));
                }
                break;
            }
        }
        if let Some((segment, end, records, lost)) = skip {
            // The rest of a damaged segment cannot be read: skip it so that delivery goes on,
            // and count it as lost.
            self.cursor = Position {
                segment,
                offset: end,
                index: records,
            };
            self.pending = self.pending.saturating_sub(lost);
            self.lost += lost;
            self.save_cursor()?;
            return self.peek(max);
        }
        Ok((!batch.records.is_empty()).then_some(batch))
    }

    /// Takes the count of records lost to damage found while reading.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// Marks a batch from `peek` delivered. Records already dropped for space are skipped.
    pub fn ack(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let Some(end) = batch.ends.last().copied() else {
            return Ok(());
        };
        let newly = batch.ends.iter().filter(|e| **e > self.cursor).count() as u64;
        if end <= self.cursor {
            return Ok(());
        }
        self.cursor = end;
        self.pending = self.pending.saturating_sub(newly);
        // Delete segments that are fully delivered, keeping the one being written.
        while self.segments.len() > 1 {
            let Some(front) = self.segments.front() else {
                break;
            };
            let done = front.id < self.cursor.segment
                || (front.id == self.cursor.segment && self.cursor.offset >= front.bytes);
            if !done {
                break;
            }
            let path = segment_path(&self.dir, front.id);
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.bytes -= front.bytes;
            self.segments.pop_front();
            if let Some(next) = self.segments.front() {
                if self.cursor.segment < next.id {
                    self.cursor = Position {
                        segment: next.id,
                        offset: 0,
                        index: 0,
                    };
                }
            }
        }
        self.save_cursor()
    }

    fn save_cursor(&self) -> Result<(), SpoolError> {
        let tmp = self.dir.join("cursor.tmp");
        let text = format!(
            "{} {} {}\n",
            self.cursor.segment, self.cursor.offset, self.cursor.index
        );
        fs::write(&tmp, text).map_err(io_err(&tmp))?;
        let path = self.dir.join("cursor");
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    let segment = parts.next()?.ok()?;
    let offset = parts.next()?.ok()?;
    let index = parts.next()?.ok()?;
    Some(Position {
        segment,
        offset,
        index,
    })
}

#[cfg(test)]
mod tests;

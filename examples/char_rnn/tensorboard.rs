//! `--tensorboard DIR`: an event file TensorBoard reads, written by hand. A file is a sequence of
//! records, each `u64` length (little-endian), masked CRC-32C of those 8 bytes, the data, masked
//! CRC-32C of the data; each record's data is an `Event` protobuf (tensorflow/core/util/event.proto):
//! `wall_time` double field 1, `step` int64 field 2, `file_version` string field 3 (the first
//! event, "brain.Event:2"), `summary` field 5 (repeated `Value` field 1: `tag` string field 1,
//! `simple_value` float field 2), `session_log` field 6 (`status` enum field 1, START = 1).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Error;

/// One run's event file, appended a whole record per write.
#[derive(Debug)]
pub struct EventFile {
    file: File,
    path: PathBuf,
}

impl EventFile {
    /// A new event file in `dir` (created if missing), opened with the file-version event. A run
    /// resumed at `resumed_at` also writes a session start at the step after it: TensorBoard then
    /// drops the steps from there on that a killed run wrote into an older file of `dir`.
    pub fn create(dir: &Path, resumed_at: Option<usize>) -> Result<EventFile, Error> {
        let fail = |what: String, e: std::io::Error| {
            Error::Metrics(format!(
                "--tensorboard {}: cannot {what}: {e}",
                dir.display()
            ))
        };
        fs::create_dir_all(dir).map_err(|e| fail("create the directory".into(), e))?;
        let secs = now();
        // TensorBoard reads the files of a directory in name order: the time first, then a
        // counter for two runs in one second of one process.
        let mut n = 0;
        let (file, path) = loop {
            let name = format!(
                "events.out.tfevents.{:010}.char_rnn.{}.{n}",
                secs as u64,
                std::process::id()
            );
            let path = dir.join(name);
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(fail(format!("create {}", path.display()), e)),
            }
        };
        let mut events = EventFile { file, path };
        let mut first = Vec::new();
        put_header(&mut first, secs, 0);
        put_bytes(&mut first, 3, b"brain.Event:2");
        events
            .write(&first)
            .map_err(|e| fail(format!("write {}", events.path.display()), e))?;
        if let Some(step) = resumed_at {
            let mut start = Vec::new();
            put_header(&mut start, secs, step as i64 + 1);
            let mut log = Vec::new();
            put_varint_field(&mut log, 1, 1);
            put_bytes(&mut start, 6, &log);
            events
                .write(&start)
                .map_err(|e| fail(format!("write {}", events.path.display()), e))?;
        }
        Ok(events)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event of `step` holding the scalars `values`, as (tag, value).
    pub fn scalars(&mut self, step: usize, values: &[(String, f32)]) -> std::io::Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_key(&mut v, 2, 5);
            v.extend_from_slice(&value.to_le_bytes());
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        put_header(&mut event, now(), step as i64);
        put_bytes(&mut event, 5, &summary);
        self.write(&event)
    }

    /// Flushes what was written to disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Appends `event` as one record, in one write: a killed run leaves whole records and at
    /// most one cut short at the end, which readers skip.
    fn write(&mut self, event: &[u8]) -> std::io::Result<()> {
        self.file.write_all(&record(event))
    }
}

/// `data` framed as a record: length, its masked CRC, the data, its masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    r
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: the records are small.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The CRC as TFRecord stores it: rotated right by 15 bits and offset, because a CRC of data
/// that embeds CRCs is weak.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// An event's `wall_time` and `step`.
fn put_header(out: &mut Vec<u8>, wall_time: f64, step: i64) {
    put_key(out, 1, 1);
    out.extend_from_slice(&wall_time.to_le_bytes());
    put_varint_field(out, 2, step as u64);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(out, ((field << 3) | wire_type) as u64);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    put_key(out, field, 0);
    put_varint(out, value);
}

/// A length-delimited field: a string, bytes or a nested message.
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Seven bits a byte, low first; the top bit says another byte follows.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

//! The disk side of in-band file transfer: what a host or client does with the session's
//! file events. [`OutgoingFile`] hashes a file and reads it for `Session::write_file`;
//! [`IncomingFile`] writes `Event::FileData` into `<name>.<sha8>.part`, resumes from an
//! earlier part file of the same content, and renames into place once the session reports
//! the SHA-256 matched (spec RIFT §11: `.part`, verify, atomic rename).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use wavry_rift::transfer::{FileHasher, FileOffer, Resume, hex, sanitize_filename};

const READ_BLOCK: usize = 256 * 1024;

/// A local file opened for sending.
#[derive(Debug)]
pub struct OutgoingFile {
    file: File,
    /// Base name offered to the peer.
    pub name: String,
    /// Size in bytes (fixed when opened).
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
}

impl OutgoingFile {
    /// Opens and hashes `path` (one sequential read).
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(sanitize_filename)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} has no usable file name", path.display()),
                )
            })?;
        let mut hasher = FileHasher::new();
        let mut block = vec![0u8; READ_BLOCK];
        loop {
            let n = file.read(&mut block)?;
            if n == 0 {
                break;
            }
            hasher.update(&block[..n]);
        }
        let size = hasher.len();
        Ok(Self {
            file,
            name,
            size,
            sha256: hasher.finish(),
        })
    }

    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.size.saturating_sub(offset)).unwrap_or(usize::MAX));
        self.file.seek(SeekFrom::Start(offset))?;
        let mut done = 0;
        while done < want {
            match self.file.read(&mut buf[done..want])? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }
}

/// A file being received into a download folder.
#[derive(Debug)]
pub struct IncomingFile {
    file: File,
    part: PathBuf,
    dir: PathBuf,
    name: String,
}

impl IncomingFile {
    /// The part file for `offer` in `dir`: named after the file and the start of its hash, so
    /// only a partial copy of the same content is ever resumed.
    pub fn part_path(dir: &Path, offer: &FileOffer) -> PathBuf {
        dir.join(format!("{}.{}.part", offer.name, &hex(&offer.sha256)[..8]))
    }

    /// Opens (or reopens) the part file for `offer`. Whole chunks already in it are kept,
    /// hashed and reported as the [`Resume`] point for `Session::accept_file`; a torn tail is
    /// cut off.
    pub fn open(dir: &Path, offer: &FileOffer) -> io::Result<(Self, Resume)> {
        fs::create_dir_all(dir)?;
        let part = Self::part_path(dir, offer);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)?;
        let have = file.metadata()?.len().min(offer.size);
        let chunk = u64::from(offer.chunk_size.max(1));
        let chunks = if have == offer.size {
            offer.total_chunks
        } else {
            u32::try_from(have / chunk).unwrap_or(0)
        };
        let keep = offer.offset_of(chunks).min(offer.size);
        file.set_len(keep)?;
        let resume = if chunks == 0 {
            Resume::Start
        } else {
            let mut hasher = FileHasher::new();
            let mut block = vec![0u8; READ_BLOCK];
            file.seek(SeekFrom::Start(0))?;
            let mut left = keep;
            while left > 0 {
                let n = block.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                file.read_exact(&mut block[..n])?;
                hasher.update(&block[..n]);
                left -= n as u64;
            }
            Resume::at(chunks, hasher)
        };
        Ok((
            Self {
                file,
                part,
                dir: dir.to_path_buf(),
                name: offer.name.clone(),
            },
            resume,
        ))
    }

    /// Writes `data` at `offset` (the session delivers in order, so this appends).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.write_all(data)
    }

    /// The session verified the SHA-256: flush, and rename the part file to the first free
    /// name of `name`, `name (1)`, … in the folder. Returns the final path.
    pub fn finish(self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        drop(self.file);
        let (stem, ext) = match self.name.rsplit_once('.') {
            Some((s, e)) if !s.is_empty() => (s.to_owned(), format!(".{e}")),
            _ => (self.name.clone(), String::new()),
        };
        for i in 0..1000u32 {
            let candidate = if i == 0 {
                self.dir.join(&self.name)
            } else {
                self.dir.join(format!("{stem} ({i}){ext}"))
            };
            // hard_link + remove: atomic, and never replaces an existing file.
            match fs::hard_link(&self.part, &candidate) {
                Ok(()) => {
                    fs::remove_file(&self.part)?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free name for {} in {}", self.name, self.dir.display()),
        ))
    }

    /// The transfer failed: delete the part file (`keep` leaves it for a later resume).
    pub fn abandon(self, keep: bool) -> io::Result<()> {
        drop(self.file);
        if keep {
            Ok(())
        } else {
            fs::remove_file(&self.part)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavry_rift::transfer::sha256;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wavry-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn offer(data: &[u8]) -> FileOffer {
        FileOffer {
            file_id: 1,
            name: "movie.mkv".into(),
            size: data.len() as u64,
            sha256: sha256(data),
            chunk_size: 1000,
            total_chunks: data.len().div_ceil(1000) as u32,
        }
    }

    #[test]
    fn outgoing_hashes_and_reads_ranges() {
        let d = tempdir("out");
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let path = d.join("a.bin");
        fs::write(&path, &data).unwrap();
        let mut f = OutgoingFile::open(&path).unwrap();
        assert_eq!(
            (f.name.as_str(), f.size, f.sha256),
            ("a.bin", 700_000, sha256(&data))
        );
        let mut buf = vec![0u8; 5000];
        assert_eq!(f.read_at(699_000, &mut buf).unwrap(), 1000);
        assert_eq!(&buf[..1000], &data[699_000..]);
        assert_eq!(f.read_at(700_000, &mut buf).unwrap(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn incoming_resumes_whole_chunks_and_renames_without_clobbering() {
        let d = tempdir("in");
        let data: Vec<u8> = (0..10_500u32).map(|i| (i * 7 % 256) as u8).collect();
        let o = offer(&data);
        // A first attempt stored 3.5 chunks, then stopped.
        let (mut f, resume) = IncomingFile::open(&d, &o).unwrap();
        assert!(matches!(resume, Resume::Start));
        f.write_at(0, &data[..3500]).unwrap();
        f.abandon(true).unwrap();
        // The second attempt resumes after chunk 3 with the hash of exactly those bytes.
        let (mut f, resume) = IncomingFile::open(&d, &o).unwrap();
        let Resume::At { chunk, hasher } = resume else {
            panic!("expected a resume point")
        };
        assert_eq!(chunk, 3);
        let mut expect = FileHasher::new();
        expect.update(&data[..3000]);
        assert_eq!(hasher.finish(), expect.finish());
        f.write_at(3000, &data[3000..]).unwrap();
        // A file of that name already exists: the new one takes "movie (1).mkv".
        fs::write(d.join("movie.mkv"), b"older").unwrap();
        let path = f.finish().unwrap();
        assert_eq!(path, d.join("movie (1).mkv"));
        assert_eq!(fs::read(&path).unwrap(), data);
        assert_eq!(fs::read(d.join("movie.mkv")).unwrap(), b"older");
        assert!(!IncomingFile::part_path(&d, &o).exists());
        // A different file under the same name never resumes the other's part.
        let (f, resume) = IncomingFile::open(&d, &offer(b"other")).unwrap();
        assert!(matches!(resume, Resume::Start));
        f.abandon(false).unwrap();
        fs::remove_dir_all(&d).unwrap();
    }
}

//! Password hashing: argon2id PHC strings, computed on a bounded pool of worker threads.

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};

thread_local! {
    /// Argon2 working memory (19 MiB with the default parameters), allocated once per pool
    /// thread and reused, so the process does not keep a fresh 19 MiB region per hash.
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn argon2_into(
    a: &Argon2<'_>,
    pw: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        let n = a.params().block_count();
        if b.len() < n {
            b.resize(n, Block::default());
        }
        a.hash_password_into_with_memory(pw, salt, out, &mut b[..n])
    })
}

/// Argon2id (crate defaults: v0x13, m = 19456 KiB, t = 2, p = 1), PHC string.
pub(crate) fn hash_password(pw: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let a = Argon2::default();
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let mut out = [0u8; 32];
    argon2_into(&a, pw.as_bytes(), salt_bytes, &mut out)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(a.params()).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("output: {e}"))?),
    };
    Ok(phc.to_string())
}

pub(crate) fn verify_password(pw: &str, phc: &str) -> bool {
    let check = || -> Option<bool> {
        let h = PasswordHash::new(phc).ok()?;
        let alg = Algorithm::try_from(h.algorithm).ok()?;
        let version = h
            .version
            .map(Version::try_from)
            .transpose()
            .ok()?
            .unwrap_or_default();
        let params = Params::try_from(&h).ok()?;
        let expected = h.hash?;
        let mut salt_buf = [0u8; 64];
        let salt = h.salt?.decode_b64(&mut salt_buf).ok()?;
        let mut out = vec![0u8; expected.len()];
        argon2_into(
            &Argon2::new(alg, version, params),
            pw.as_bytes(),
            salt,
            &mut out,
        )
        .ok()?;
        Some(wavry_control_core::ct_eq(&out, expected.as_bytes()))
    };
    check().unwrap_or(false)
}

/// Job run on the argon2 pool.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads for argon2 work. Each hash needs 19 MiB; running them on a few
/// long-lived threads bounds both concurrency and the memory the allocator keeps per thread
/// (with `spawn_blocking`, every new blocking thread grew its own arena).
pub(crate) struct HashPool {
    tx: std::sync::mpsc::SyncSender<Job>,
}

impl HashPool {
    /// Starts `threads` workers with a queue of `queue` waiting jobs.
    pub(crate) fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue.clamp(1, 65_536));
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// Runs `f` on the pool; `None` when the queue is full or the pool is gone.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = otx.send(f());
        });
        self.tx.try_send(job).ok()?;
        orx.await.ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_verify_and_are_phc() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("x", "not a phc string"));
    }
}

//! Fetching the official dataset files on first use, with a progress bar, into the cache
//! folder; every file is checked against its published MD5 before use.
//!
//! For MNIST and Fashion-MNIST the check is on the decompressed content (the published IDX
//! MD5s), so re-compressed mirrors pass too; for CIFAR-10 and SVHN it is on the file as
//! published. `TRIFECTA_MIRROR=URL` replaces every official base URL (`URL/<file name>`), for
//! mirrors and for the tests, which serve files from 127.0.0.1.

use super::DatasetKind;
use crate::error::{Error, Result};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// One official file.
#[derive(Clone, Copy, Debug)]
pub struct Remote {
    pub file: &'static str,
    pub url: &'static str,
    pub md5: &'static str,
    /// Whether `md5` is of the gunzipped content rather than of the file.
    pub content: bool,
}

const MNIST: &[Remote] = &[
    Remote {
        file: "train-images-idx3-ubyte.gz",
        url: "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        md5: "6bbc9ace898e44ae57da46a324031adb",
        content: true,
    },
    Remote {
        file: "train-labels-idx1-ubyte.gz",
        url: "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
        md5: "a25bea736e30d166cdddb491f175f624",
        content: true,
    },
    Remote {
        file: "t10k-images-idx3-ubyte.gz",
        url: "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
        md5: "2646ac647ad5339dbf082846283269ea",
        content: true,
    },
    Remote {
        file: "t10k-labels-idx1-ubyte.gz",
        url: "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        md5: "27ae3e4e09519cfbb04c329615203637",
        content: true,
    },
];

const FASHION_MNIST: &[Remote] = &[
    Remote {
        file: "train-images-idx3-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
        md5: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        content: true,
    },
    Remote {
        file: "train-labels-idx1-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
        md5: "9018921c3c673c538a1fc5bad174d6f9",
        content: true,
    },
    Remote {
        file: "t10k-images-idx3-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
        md5: "8181f5470baa50b63fa0f6fddb340f0a",
        content: true,
    },
    Remote {
        file: "t10k-labels-idx1-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
        md5: "15d484375f8d13e6eb1aabb0c3f46965",
        content: true,
    },
];

const CIFAR10: &[Remote] = &[Remote {
    file: "cifar-10-binary.tar.gz",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
    content: false,
}];

const SVHN: &[Remote] = &[
    Remote {
        file: "train_32x32.mat",
        url: "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        md5: "e26dedcc434d2e4c54c9b2d4a06d8373",
        content: false,
    },
    Remote {
        file: "test_32x32.mat",
        url: "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        md5: "eb5a983be6a315427106f1b164d9cef3",
        content: false,
    },
];

/// The official files of a dataset (none for the built-in sample and image folders).
pub fn remotes(kind: DatasetKind) -> &'static [Remote] {
    match kind {
        DatasetKind::Mnist => MNIST,
        DatasetKind::FashionMnist => FASHION_MNIST,
        DatasetKind::Cifar10 => CIFAR10,
        DatasetKind::Svhn => SVHN,
        DatasetKind::MnistSample | DatasetKind::Folder => &[],
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5 of a file, or of its gunzipped content.
pub fn md5_of(path: &Path, content: bool) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader: Box<dyn Read> = if content {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::data(path, format!("unreadable while checksumming: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Checks `path` against `remote`'s checksum.
pub fn verify(path: &Path, remote: &Remote) -> Result<()> {
    let got = md5_of(path, remote.content)?;
    if got == remote.md5 {
        Ok(())
    } else {
        Err(Error::data(
            path,
            format!(
                "checksum mismatch: MD5{} is {got}, expected {}",
                if remote.content {
                    " of the content"
                } else {
                    ""
                },
                remote.md5
            ),
        ))
    }
}

/// The URL to fetch `remote` from, honouring `TRIFECTA_MIRROR`.
pub fn url_of(remote: &Remote) -> String {
    match std::env::var("TRIFECTA_MIRROR") {
        Ok(base) => format!("{}/{}", base.trim_end_matches('/'), remote.file),
        Err(_) => remote.url.to_string(),
    }
}

/// How long a download may wait for the server, to connect, to answer, or for the next bytes
/// of the body, before it fails (ureq waits forever by default: a stalled server hung the run).
pub const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Downloads `url` to `dest` through a `.part` file, with a progress bar on a terminal.
/// Fails, leaving nothing at `dest`, on an HTTP error, a body shorter than announced, or a
/// server silent for [`STALL`].
pub fn fetch(url: &str, dest: &Path) -> Result<()> {
    fetch_within(url, dest, STALL)
}

/// [`fetch`], failing after `stall` without progress.
pub fn fetch_within(url: &str, dest: &Path, stall: std::time::Duration) -> Result<()> {
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let network = |msg: String| Error::data(dest, format!("download from {url} failed: {msg}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(stall))
        .timeout_recv_response(Some(stall))
        .timeout_per_read(Some(stall))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| network(e.to_string()))?;
    let total = response.body().content_length();
    let bar =
        indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    bar.set_message(
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let result = (|| -> Result<()> {
        let mut file = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
        let mut reader = response.body_mut().as_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut received = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| network(e.to_string()))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(|e| Error::io(&part, e))?;
            received += n as u64;
            bar.set_position(received);
        }
        if let Some(total) = total
            && received != total
        {
            return Err(network(format!("truncated: {received} of {total} bytes")));
        }
        file.sync_all().map_err(|e| Error::io(&part, e))?;
        std::fs::rename(&part, dest).map_err(|e| Error::io(dest, e))
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Makes sure every official file of `kind` is in `dir` and passes its checksum, downloading
/// what is missing. A downloaded file that fails its checksum is removed; one that was
/// already there is left for the user to look at.
pub fn ensure(kind: DatasetKind, dir: &Path) -> Result<()> {
    let remotes = remotes(kind);
    if remotes.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for remote in remotes {
        let dest = dir.join(remote.file);
        if dest.exists() {
            verify(&dest, remote).map_err(|e| {
                Error::data(&dest, format!("{e}; delete the file to download it again"))
            })?;
            continue;
        }
        let url = url_of(remote);
        eprintln!("downloading {url} to {}", dest.display());
        fetch(&url, &dest)?;
        if let Err(e) = verify(&dest, remote) {
            let _ = std::fs::remove_file(&dest);
            return Err(e);
        }
    }
    Ok(())
}

/// MNIST and Fashion-MNIST name their files alike, so a folder of one passed as the other
/// would load and train without a complaint. An explicit folder is not checksummed as a
/// whole (it may hold other packagings of the data), but a small label file that is the other
/// dataset's, byte for byte, is an error that names it.
pub fn check_not_the_twin(kind: DatasetKind, dir: &Path) -> Result<()> {
    let twin = match kind {
        DatasetKind::Mnist => DatasetKind::FashionMnist,
        DatasetKind::FashionMnist => DatasetKind::Mnist,
        _ => return Ok(()),
    };
    match official_labels(twin, dir)? {
        Some(path) => Err(Error::data(
            &path,
            format!(
                "this is {}'s file, not {}'s (--dataset {}, or another --data-dir)",
                twin.name(),
                kind.name(),
                twin.name()
            ),
        )),
        None => Ok(()),
    }
}

/// The first of `kind`'s official label files that `dir` holds, byte for byte.
pub fn official_labels(kind: DatasetKind, dir: &Path) -> Result<Option<PathBuf>> {
    for remote in remotes(kind).iter().filter(|r| r.file.contains("labels")) {
        let path = dir.join(remote.file);
        if path.exists() && md5_of(&path, remote.content)? == remote.md5 {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Checks every official file of `kind` in `dir`; returns one line per file.
pub fn check_all(kind: DatasetKind, dir: &Path) -> Result<Vec<String>> {
    remotes(kind)
        .iter()
        .map(|remote| {
            let path = dir.join(remote.file);
            verify(&path, remote)?;
            Ok(format!("ok  {}  md5 {}", path.display(), remote.md5))
        })
        .collect()
}

//! Every dataset format, read from files the tests write themselves (and real MNIST from
//! `../shared`), including the ways each can be wrong; downloads against a local HTTP server.

mod common;

use common::*;
use trifecta::data::{self, DatasetKind, Split, cifar, download, image_folder, svhn};

/// A CIFAR record: label, then the R, G, B planes, each pixel value = (channel*50 + pixel) % 256.
fn cifar_record(label: u8, seed: u8) -> Vec<u8> {
    let mut r = vec![label];
    for ch in 0..3u32 {
        for p in 0..1024u32 {
            r.push(((ch * 50 + p + seed as u32) % 256) as u8);
        }
    }
    r
}

fn write_cifar_folder(dir: &std::path::Path) {
    let batches = dir.join(cifar::FOLDER);
    std::fs::create_dir_all(&batches).unwrap();
    for name in cifar::batch_names(Split::Train)
        .iter()
        .chain(&cifar::batch_names(Split::Test))
    {
        let bytes = [cifar_record(3, 0), cifar_record(9, 1)].concat();
        std::fs::write(batches.join(name), bytes).unwrap();
    }
}

#[test]
fn real_mnist_loads_with_official_shapes() {
    let dir = shared_dir().join("datasets/mnist");
    let test = data::load(DatasetKind::Mnist, &dir, Split::Test, false).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(
        (test.shape.height, test.shape.width, test.shape.channels),
        (28, 28, 1)
    );
    assert_eq!(test.labels[..5], [7, 2, 1, 0, 4]);
    let sample = data::load(DatasetKind::MnistSample, &dir, Split::Train, false).unwrap();
    assert_eq!(sample.len(), 4000);
}

/// MNIST and Fashion-MNIST share file names: each folder passed as the other is refused,
/// naming the file and the dataset it holds.
#[test]
fn mnist_and_fashion_mnist_are_not_mistaken_for_each_other() {
    let mnist = shared_dir().join("datasets/mnist");
    let fashion = shared_dir().join("datasets/fashion-mnist");
    download::check_not_the_twin(DatasetKind::Mnist, &mnist).unwrap();
    download::check_not_the_twin(DatasetKind::FashionMnist, &fashion).unwrap();
    let err = download::check_not_the_twin(DatasetKind::Mnist, &fashion)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labels-idx1-ubyte.gz") && err.contains("fashion-mnist's file, not mnist's"),
        "{err}"
    );
    let err = download::check_not_the_twin(DatasetKind::FashionMnist, &mnist)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mnist's file, not fashion-mnist's"), "{err}");
    // Other kinds have no twin; an empty folder has nothing to mistake.
    download::check_not_the_twin(DatasetKind::Cifar10, &mnist).unwrap();
    let tmp = TempDir::new("twin");
    download::check_not_the_twin(DatasetKind::Mnist, tmp.path()).unwrap();
}

/// A folder is known by the files its format keeps (IDX twins by their labels), and loading it
/// as another dataset says which it holds and the flag that reads it, in place of the
/// first file the wrong format missed.
#[test]
fn a_folder_of_another_dataset_names_the_dataset_it_holds() {
    let shared = shared_dir().join("datasets");
    let cases = [
        ("mnist", DatasetKind::Mnist),
        ("fashion-mnist", DatasetKind::FashionMnist),
        ("cifar10-jpeg", DatasetKind::Folder),
    ];
    for (name, kind) in cases {
        assert_eq!(data::detect(&shared.join(name)), Some(kind), "{name}");
    }
    let cifar = TempDir::new("detect-cifar");
    write_cifar_folder(cifar.path());
    let svhn_dir = TempDir::new("detect-svhn");
    std::fs::write(svhn_dir.path().join(svhn::file_name(Split::Train)), b"").unwrap();
    let images = TempDir::new("detect-images");
    std::fs::create_dir_all(images.path().join("train/cat")).unwrap();
    let empty = TempDir::new("detect-empty");
    assert_eq!(data::detect(cifar.path()), Some(DatasetKind::Cifar10));
    assert_eq!(data::detect(svhn_dir.path()), Some(DatasetKind::Svhn));
    assert_eq!(data::detect(images.path()), Some(DatasetKind::Folder));
    assert_eq!(data::detect(empty.path()), None);

    let err = |kind, dir: &std::path::Path| {
        data::load(kind, dir, Split::Test, false)
            .unwrap_err()
            .to_string()
    };
    let msg = err(DatasetKind::Cifar10, &shared.join("cifar10-jpeg"));
    assert!(
        msg.contains("cifar10-jpeg: this folder holds an image folder")
            && msg.ends_with("not cifar10's: --dataset folder reads it"),
        "{msg}"
    );
    let msg = err(DatasetKind::Folder, &shared.join("mnist"));
    assert!(
        msg.ends_with("holds mnist's files, not an image folder: --dataset mnist reads it"),
        "{msg}"
    );
    let msg = err(DatasetKind::Svhn, &shared.join("fashion-mnist"));
    assert!(msg.ends_with("--dataset fashion-mnist reads it"), "{msg}");
    let msg = err(DatasetKind::Mnist, cifar.path());
    assert!(msg.ends_with("--dataset cifar10 reads it"), "{msg}");
    // A folder of nothing known keeps the format's own error, naming the missing file.
    let msg = err(DatasetKind::Svhn, empty.path());
    assert!(msg.contains("test_32x32.mat"), "{msg}");
    // So does a folder of the asked-for format that lacks a file.
    let msg = err(DatasetKind::Svhn, svhn_dir.path());
    assert!(msg.contains("test_32x32.mat"), "{msg}");
}

#[test]
fn cifar_binary_from_folder_and_from_archive() {
    let tmp = TempDir::new("cifar");
    write_cifar_folder(tmp.path());
    let train = data::load(DatasetKind::Cifar10, tmp.path(), Split::Train, false).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.labels[..2], [3, 9]);
    // HWC: pixel p, channel ch of the first image = (ch*50 + p) % 256.
    assert_eq!(&train.image(0)[..6], &[0, 50, 100, 1, 51, 101]);

    let archive_dir = TempDir::new("cifar-tar");
    let file = std::fs::File::create(archive_dir.path().join(cifar::ARCHIVE)).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    tar.append_dir_all(cifar::FOLDER, tmp.path().join(cifar::FOLDER))
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let test = data::load(DatasetKind::Cifar10, archive_dir.path(), Split::Test, false).unwrap();
    assert_eq!(test.len(), 2);
    assert_eq!(
        test.image(1),
        data::load(DatasetKind::Cifar10, tmp.path(), Split::Test, false)
            .unwrap()
            .image(1)
    );
}

#[test]
fn cifar_rejects_bad_sizes_and_labels() {
    let tmp = TempDir::new("cifar-bad");
    write_cifar_folder(tmp.path());
    let path = tmp.path().join(cifar::FOLDER).join("data_batch_2.bin");
    std::fs::write(&path, vec![0u8; 3073 * 2 - 5]).unwrap();
    let err = data::load(DatasetKind::Cifar10, tmp.path(), Split::Train, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data_batch_2.bin") && err.contains("3073"),
        "{err}"
    );
    std::fs::write(&path, cifar_record(10, 0)).unwrap();
    let err = data::load(DatasetKind::Cifar10, tmp.path(), Split::Train, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data_batch_2.bin") && err.contains("label 10"),
        "{err}"
    );
}

#[test]
fn svhn_mat_files() {
    let tmp = TempDir::new("svhn");
    let (h, w, n) = (4usize, 3usize, 2usize);
    // Column-major X: value = r + 10*col + 50*ch + 100*i (mod 256).
    let mut x = Vec::new();
    for i in 0..n {
        for ch in 0..3 {
            for col in 0..w {
                for r in 0..h {
                    x.push(((r + 10 * col + 50 * ch + 100 * i) % 256) as u8);
                }
            }
        }
    }
    let y: Vec<u8> = [10.0f64, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_mat(
        &tmp.path().join("train_32x32.mat"),
        &[
            ("X", vec![h, w, 3, n], 9, x.clone()),
            ("y", vec![n, 1], 6, y.clone()),
        ],
    );
    let train = data::load(DatasetKind::Svhn, tmp.path(), Split::Train, false).unwrap();
    assert_eq!(train.labels, vec![0, 3], "label 10 means digit 0");
    assert_eq!(
        (train.shape.height, train.shape.width, train.shape.channels),
        (h, w, 3)
    );
    // Image 1, row 2, column 1, channel 2 = 2 + 10 + 100 + 100.
    assert_eq!(train.image(1)[(2 * w + 1) * 3 + 2], 212);

    write_mat(
        &tmp.path().join("test_32x32.mat"),
        &[("y", vec![n, 1], 6, y.clone())],
    );
    let err = svhn::load(tmp.path(), Split::Test).unwrap_err().to_string();
    assert!(
        err.contains("test_32x32.mat") && err.contains("no variable X"),
        "{err}"
    );
    write_mat(
        &tmp.path().join("test_32x32.mat"),
        &[("X", vec![h, w, 3, n], 9, x.clone())],
    );
    let err = svhn::load(tmp.path(), Split::Test).unwrap_err().to_string();
    assert!(err.contains("no variable y"), "{err}");
    let bad_y: Vec<u8> = [11.0f64, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_mat(
        &tmp.path().join("test_32x32.mat"),
        &[("X", vec![h, w, 3, n], 9, x), ("y", vec![n, 1], 6, bad_y)],
    );
    let err = svhn::load(tmp.path(), Split::Test).unwrap_err().to_string();
    assert!(
        err.contains("label 11") && err.contains("out of range"),
        "{err}"
    );
}

fn write_png(path: &std::path::Path, w: u32, h: u32, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb([value, value / 2, 255 - value]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folders_from_disk_and_archive() {
    let tmp = TempDir::new("folder");
    for (split, count) in [("train", 3), ("test", 2)] {
        for (class, value) in [("cat", 10u8), ("dog", 200u8)] {
            for k in 0..count {
                write_png(
                    &tmp.path().join(format!("{split}/{class}/{k}.png")),
                    5,
                    4,
                    value,
                );
            }
        }
    }
    // Hidden names are neither classes nor images: a notebook's checkpoint folder, and the
    // resource forks that archives made on macOS carry (undecodable as images).
    std::fs::create_dir_all(tmp.path().join("train/.ipynb_checkpoints")).unwrap();
    std::fs::write(tmp.path().join("train/cat/._0.png"), b"\0\x05\x16\x07").unwrap();
    let train = image_folder::load(tmp.path(), Split::Train).unwrap();
    assert_eq!((train.len(), train.classes), (6, 2));
    assert_eq!(train.labels, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(
        (train.shape.height, train.shape.width, train.shape.channels),
        (4, 5, 3)
    );
    assert_eq!(&train.image(3)[..3], &[200, 100, 55]);

    let archive_dir = TempDir::new("folder-tar");
    let file = std::fs::File::create(archive_dir.path().join("pets.tar.gz")).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    tar.append_dir_all("pets", tmp.path()).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let test = data::load(DatasetKind::Folder, archive_dir.path(), Split::Test, false).unwrap();
    assert_eq!((test.len(), test.classes), (4, 2));
    assert_eq!(test.labels, vec![0, 0, 1, 1]);

    // A grayscale file that comes first (cat/0.png) widens to RGB with the rest, instead of
    // narrowing the whole split to gray; a split of grayscale files alone stays gray.
    image::GrayImage::from_pixel(5, 4, image::Luma([77]))
        .save(tmp.path().join("train/cat/0.png"))
        .unwrap();
    let mixed = image_folder::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(mixed.shape.channels, 3);
    assert_eq!(&mixed.image(0)[..3], &[77, 77, 77]);
    assert_eq!(&mixed.image(3)[..3], &[200, 100, 55]);
    let gray = TempDir::new("folder-gray");
    for split in ["train", "test"] {
        image::GrayImage::from_pixel(3, 3, image::Luma([9]))
            .save({
                let path = gray.path().join(format!("{split}/only/0.png"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                path
            })
            .unwrap();
    }
    let gray = image_folder::load(gray.path(), Split::Train).unwrap();
    assert_eq!((gray.shape.channels, gray.image(0)), (1, &[9u8; 9][..]));

    // A training class folder without images is refused, not made a label no image has.
    std::fs::create_dir_all(tmp.path().join("train/bird")).unwrap();
    let err = image_folder::load(tmp.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bird") && err.contains("no .png or .jpg images"),
        "{err}"
    );
    std::fs::remove_dir(tmp.path().join("train/bird")).unwrap();

    write_png(&tmp.path().join("test/dog/odd.png"), 6, 4, 1);
    let err = image_folder::load(tmp.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("odd.png") && err.contains("6x4") && err.contains("expected 5x4"),
        "{err}"
    );
}

#[test]
fn idx_label_out_of_range_names_the_file() {
    let tmp = TempDir::new("idx-label");
    let src = shared_dir().join("datasets/mnist");
    for f in [
        "t10k-images-idx3-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let mut labels = vec![0, 0, 8, 1, 0, 0, 0x27, 0x10];
    labels.extend(std::iter::repeat_n(1u8, 10_000));
    labels[8 + 17] = 11;
    std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte"), &labels).unwrap();
    let err = data::load(DatasetKind::Mnist, tmp.path(), Split::Test, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t10k-labels-idx1-ubyte") && err.contains("label 11 at index 17"),
        "{err}"
    );
}

#[test]
fn download_verifies_checksums_and_rejects_truncation() {
    let body = b"forward-forward".to_vec();
    // MD5 of the body, computed independently (Python's hashlib).
    let md5 = "a73f447a676b64e463d95e52facb797e";
    let base = serve(
        vec![
            ("/good".into(), None, body.clone()),
            ("/short".into(), Some(body.len() + 100), body.clone()),
            ("/stall".into(), Some(body.len() + 100), body.clone()),
        ],
        4,
    );
    let tmp = TempDir::new("download");
    let dest = tmp.path().join("file.bin");
    download::fetch(&format!("{base}/good"), &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let good = download::Remote {
        file: "file.bin",
        url: "",
        md5,
        content: false,
    };
    download::verify(&dest, &good).unwrap();
    std::fs::write(&dest, b"forward-forwarD").unwrap();
    let err = download::verify(&dest, &good).unwrap_err().to_string();
    assert!(
        err.contains("file.bin") && err.contains("checksum mismatch"),
        "{err}"
    );

    let short = tmp.path().join("short.bin");
    let err = download::fetch(&format!("{base}/short"), &short)
        .unwrap_err()
        .to_string();
    assert!(err.contains("short.bin"), "{err}");
    assert!(
        !short.exists() && !tmp.path().join("short.bin.part").exists(),
        "nothing is left behind"
    );

    // A server that stops sending fails the download once it has been silent for the stall
    // time (here 0.3 s; the server holds the connection for 5 s).
    let stalled = tmp.path().join("stalled.bin");
    let started = std::time::Instant::now();
    let err = download::fetch_within(
        &format!("{base}/stall"),
        &stalled,
        std::time::Duration::from_millis(300),
    )
    .unwrap_err()
    .to_string();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "waited for the server: {err}"
    );
    assert!(
        err.contains("stalled.bin") && err.contains("failed"),
        "{err}"
    );
    assert!(!stalled.exists() && !tmp.path().join("stalled.bin.part").exists());

    let missing = tmp.path().join("missing.bin");
    let err = download::fetch(&format!("{base}/nothing-here"), &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("404") || err.contains("status"), "{err}");
}

#[test]
fn official_md5_of_the_shared_mnist_content() {
    let dir = shared_dir().join("datasets/mnist");
    for remote in download::remotes(DatasetKind::Mnist) {
        download::verify(&dir.join(remote.file), remote).unwrap();
    }
    let dir = shared_dir().join("datasets/fashion-mnist");
    for remote in download::remotes(DatasetKind::FashionMnist) {
        download::verify(&dir.join(remote.file), remote).unwrap();
    }
}

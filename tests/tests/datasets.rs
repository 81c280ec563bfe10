//! Fashion-MNIST from the committed subset (the full set is for training, not for tests).

use burn::data::dataset::Dataset;
use codi_tests::fixture;
use codi_train::data::fashion_mnist::{caption, FashionMnist, Split, SIZE};

#[test]
fn subset_loads_as_padded_rgb_with_captions() {
    let dir = fixture("fashion-mnist-subset");
    for split in [Split::Train, Split::Test] {
        let ds = FashionMnist::load(&dir, split).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ds.len(), 100);
        let mut per_class = [0; 10];
        for i in 0..ds.len() {
            let item = ds.get(i).unwrap();
            per_class[item.label] += 1;
            assert_eq!(item.pixels.len(), 3 * SIZE * SIZE);
            assert_eq!(item.caption, caption(item.label));
            // Padding is black, the three channels are equal, values are in [0, 1].
            assert!(item.pixels[..SIZE * 2].iter().all(|&p| p == 0.0));
            assert_eq!(item.pixels[..SIZE * SIZE], item.pixels[2 * SIZE * SIZE..]);
            assert!(item.pixels.iter().all(|&p| (0.0..=1.0).contains(&p)));
            assert!(
                item.pixels.iter().any(|&p| p > 0.5),
                "an empty image at {i}"
            );
        }
        assert_eq!(per_class, [10; 10]);
        assert!(ds.get(100).is_none());
    }
    assert_eq!(caption(9), "an ankle boot");
    assert_eq!(caption(7), "a sneaker");
}

#[test]
fn missing_files_say_which_and_how_to_get_them() {
    let e = FashionMnist::load(&fixture("no-such-dir"), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("dataset-fashion-mnist"),
        "{e}"
    );
    // Labels of the wrong length are caught.
    let dir = codi_tests::TempDir::new("fmnist");
    let src = fixture("fashion-mnist-subset");
    std::fs::copy(
        src.join("t10k-images-idx3-ubyte.gz"),
        dir.join("train-images-idx3-ubyte.gz"),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 1, 3],
    )
    .unwrap();
    let e = FashionMnist::load(&dir, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("labels for 100 images"),
        "{e}"
    );
}

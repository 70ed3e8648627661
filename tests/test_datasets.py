"""Each data source read from files in its real on-disk layout (written here), each refusing a
truncated file and a wrong layout with the file named; each built-in net on 1×28×28, 3×32×32
and 3×64×64 images."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import REPO
from vaestudy.cli import main
from vaestudy.config.run import DataConfig, RunConfig
from vaestudy.errors import DataError
from vaestudy.training.data import images as intensities
from vaestudy.training.data import load_data
from vaestudy.training.datasets import data_problem
from vaestudy.training.trainer import Trainer

RNG = np.random.default_rng(0)


def images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_cifar(root, n_train: int = 50, n_test: int = 30) -> None:
    """CIFAR-10's python layout: five training batches and a test batch, pickled dicts."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train
        batch = {"data": images(n, (3072,)), "labels": RNG.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))


def write_folder(root, size: int = 32, mode: str = "RGB") -> None:
    for part, n in (("train", 12), ("test", 6)):
        for label in ("cat", "dog"):
            folder = root / part / label
            folder.mkdir(parents=True)
            for i in range(n):
                channels = (3,) if mode == "RGB" else ()
                pixels = images(1, (size, size, *channels))[0]
                Image.fromarray(pixels, mode).save(folder / f"{i}.png")


def cfg_for(dataset: str, root, **extra) -> DataConfig:
    return DataConfig(**{"dataset": dataset, "root": str(root), "validation": 0.2, **extra})


def test_cifar10_in_its_python_layout(tmp_path):
    write_cifar(tmp_path)
    cfg = cfg_for("cifar10", tmp_path)
    assert data_problem(cfg) is None
    data = load_data(cfg, torch.device("cpu"))
    assert data.shape == (3, 32, 32) and data.n_classes == 10
    assert len(data.train_x) + len(data.val_x) == 250 and len(data.test_x) == 30
    assert data.test_x.dtype == torch.uint8  # as stored: converted per batch on the device

    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:5000])  # cut short
    assert f"{batch}: not a readable CIFAR-10 batch" in data_problem(cfg)
    with pytest.raises(DataError, match="data_batch_3"):
        load_data(cfg, torch.device("cpu"))
    batch.unlink()
    assert "missing data_batch_3" in data_problem(cfg)


def test_cifar10_with_images_of_the_wrong_shape_is_refused(tmp_path):
    write_cifar(tmp_path)
    wrong = {"data": images(5, (28 * 28,)), "labels": [0] * 5}  # MNIST-sized rows
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(wrong))
    problem = data_problem(cfg_for("cifar10", tmp_path))
    assert "test_batch: 'data' is uint8 (5, 784); CIFAR-10 holds uint8 [N, 3072]" in problem


def test_svhn_in_its_matlab_layout(tmp_path):
    from scipy.io import savemat

    for name, n in (("train_32x32.mat", 40), ("test_32x32.mat", 12)):
        labels = (np.arange(n) % 10 + 1).reshape(n, 1)  # 1..10, 10 for the digit 0
        savemat(tmp_path / name, {"X": images(n, (32, 32, 3)).transpose(1, 2, 3, 0), "y": labels})
    cfg = cfg_for("svhn", tmp_path)
    assert data_problem(cfg) is None
    data = load_data(cfg, torch.device("cpu"))
    assert data.shape == (3, 32, 32) and data.n_classes == 10 and len(data.test_x) == 12
    assert data.test_y[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]

    path = tmp_path / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:2000])
    assert f"svhn: {path}: not a readable SVHN file" in data_problem(cfg)
    savemat(path, {"X": images(5, (28, 28, 3)), "y": np.ones((5, 1))})
    assert "SVHN holds uint8 [32, 32, 3, N]" in data_problem(cfg)


def test_dsprites_in_its_published_file(tmp_path):
    from vaestudy.training.datasets.dsprites import FILE, DSprites

    n = 200
    factors = np.stack(
        [np.zeros(n), np.arange(n) % 3, *(np.arange(n) % k for k in (6, 40, 32, 32))], 1
    )
    path = tmp_path / FILE
    np.savez(path, imgs=RNG.integers(0, 2, (n, 64, 64), dtype=np.uint8), latents_classes=factors)
    cfg = cfg_for("dsprites", tmp_path)
    assert data_problem(cfg) is None
    data = load_data(cfg, torch.device("cpu"))
    assert data.shape == (1, 64, 64) and data.n_classes == 3 and len(data.test_x) == 20
    assert set(data.test_x.unique().tolist()) <= {0, 255}  # binarised, stored as uint8
    assert DSprites(cfg).factors("test").shape == (20, 6)

    np.savez(path, imgs=np.zeros((n, 64, 64), np.uint8))  # the factors left out
    assert "expected dsprites_ndarray" in data_problem(cfg) and "latents_classes" in data_problem(
        cfg
    )
    path.write_bytes(path.read_bytes()[:-100])
    assert f"dsprites: {path}: not a readable .npz file" in data_problem(cfg)


def test_an_image_folder_per_split(tmp_path):
    write_folder(tmp_path)
    cfg = cfg_for("image_folder", tmp_path)
    assert data_problem(cfg) is None
    data = load_data(cfg, torch.device("cpu"))
    assert data.shape == (3, 32, 32) and data.n_classes == 2 and len(data.test_x) == 12

    odd = tmp_path / "train" / "dog" / "odd.png"
    Image.fromarray(images(1, (20, 20, 3))[0]).save(odd)  # another size
    assert "several sizes" in data_problem(cfg)
    odd.write_bytes(b"\x89PNG not really")  # a damaged image
    assert f"{odd}: not a readable image" in data_problem(cfg)
    odd.unlink()
    shutil.rmtree(tmp_path / "test")
    assert f"{tmp_path / 'test'} not found: expected train/<class>/<image>" in data_problem(cfg)


def test_omniglot_in_torchvisions_layout_resized_to_28(tmp_path):
    for split, alphabets in (("images_background", 3), ("images_evaluation", 2)):
        for a in range(alphabets):
            folder = tmp_path / "omniglot-py" / split / f"Alphabet_{a}" / "character01"
            folder.mkdir(parents=True)
            for i in range(4):
                strokes = np.full((105, 105), 255, np.uint8)  # white, with a black stroke
                strokes[20 + i : 80, 50:55] = 0
                Image.fromarray(strokes, "L").convert("1").save(folder / f"{a}_{i}.png")
    cfg = cfg_for("omniglot", tmp_path, image_size=28, validation=2)
    assert data_problem(cfg) is None
    data = load_data(cfg, torch.device("cpu"))
    assert data.shape == (1, 28, 28) and data.n_classes == 0 and len(data.test_x) == 8
    assert intensities(data.train_x).mean() < 0.2  # strokes are 1, the background 0

    png = tmp_path / "omniglot-py" / "images_background" / "Alphabet_1" / "character01" / "1_2.png"
    png.write_bytes(png.read_bytes()[:-30])  # cut short
    assert f"omniglot: {png}: not a readable image" in data_problem(cfg)
    shutil.rmtree(tmp_path / "omniglot-py" / "images_evaluation")
    assert "omniglot not found: no images in" in data_problem(cfg)


def test_celeba_cropped_and_resized_to_64(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for i in range(10):
        Image.fromarray(images(1, (218, 178, 3))[0]).save(folder / f"{i:06d}.jpg")
        lines.append(f"{i:06d}.jpg {0 if i < 6 else 1 if i < 8 else 2}")
    partition = tmp_path / "celeba" / "list_eval_partition.txt"
    partition.write_text("\n".join(lines) + "\n")
    cfg = cfg_for("celeba", tmp_path, image_size=64, validation=2)
    assert data_problem(cfg) is None
    data = load_data(cfg, torch.device("cpu"))
    assert data.shape == (3, 64, 64) and len(data.train_x) == 6 and len(data.test_x) == 2

    jpeg = folder / "000003.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:-500])  # cut short: its header still reads
    assert f"celeba: {jpeg}: the JPEG is cut short" in data_problem(cfg)
    (folder / "000009.jpg").unlink()
    assert "1 images listed in list_eval_partition.txt are missing" in data_problem(cfg)
    partition.write_text("000001.jpg train\n")
    assert "expected lines '<image>.jpg <0|1|2>'" in data_problem(cfg)


def test_a_greyscale_image_folder_has_one_channel(tmp_path):
    write_folder(tmp_path, size=28, mode="L")
    data = load_data(cfg_for("image_folder", tmp_path), torch.device("cpu"))
    assert data.shape == (1, 28, 28)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_a_tensor_file_with_and_without_labels(tmp_path, suffix):
    arrays = {"train_x": images(40, (3, 64, 64)), "test_x": images(10, (3, 64, 64))}
    labelled = {**arrays, "train_y": np.arange(40) % 4, "test_y": np.arange(10) % 4}
    for name, content in (("unlabelled", arrays), ("labelled", labelled)):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".npz":
            np.savez(path, **content)
        else:
            torch.save({k: torch.from_numpy(v) for k, v in content.items()}, path)
        cfg = cfg_for("tensors", path)
        assert data_problem(cfg) is None
        data = load_data(cfg, torch.device("cpu"))
        assert data.shape == (3, 64, 64)
        assert data.n_classes == (4 if name == "labelled" else 0)

    path = tmp_path / f"labelled{suffix}"
    path.write_bytes(path.read_bytes()[:-4000])  # truncated
    assert f"tensors: {path}: not a readable {suffix} file" in data_problem(
        cfg_for("tensors", path)
    )


def test_a_tensor_file_in_the_wrong_layout_is_named(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, train_x=images(8, (28, 28)), test=images(4, (28, 28)))
    assert "lacks ['test_x']" in data_problem(cfg_for("tensors", path))
    np.savez(path, train_x=images(8, (28, 28)), test_x=images(4, (32, 32)))
    assert "train_x images are (1, 28, 28), test_x images (1, 32, 32)" in data_problem(
        cfg_for("tensors", path)
    )
    np.savez(path, train_x=images(8, (28, 28)), test_x=images(4, (28, 28)), train_y=np.ones(8))
    assert "labels for one split only" in data_problem(cfg_for("tensors", path))
    assert "should be a .npz or .pt file" in data_problem(cfg_for("tensors", tmp_path))


def test_download_is_refused_where_vaestudy_cannot_download(tmp_path):
    problem = data_problem(cfg_for("cifar10", tmp_path, download=True))
    assert "data.download: cifar10 cannot be downloaded by vaestudy" in problem


def test_a_conditional_model_needs_labels(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, train_x=images(20, (28, 28)), test_x=images(5, (28, 28)))
    cfg = RunConfig.model_validate(
        {"data": {"dataset": "tensors", "root": str(path)}, "model": {"conditional": True}}
    )
    with pytest.raises(ValueError, match="model.conditional needs labelled data"):
        Trainer(cfg)


SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["mlp", "conv", "vlae"])
def test_each_built_in_net_trains_on_each_image_shape(tmp_path, name, shape):
    path = tmp_path / "data.npz"
    n = 24
    np.savez(
        path,
        train_x=images(n, shape),
        test_x=images(8, shape),
        train_y=np.arange(n) % 3,
        test_y=np.arange(8) % 3,
    )
    raw = {
        "data": {"dataset": "tensors", "root": str(path), "pixels": "gaussian", "validation": 4},
        "model": {"name": name, "latent_dim": 3, "hidden": 32},
        "train": {"epochs": 2, "batch_size": 10, "log_every": 1, "iwae_samples": 2},
    }
    cfg = RunConfig.model_validate(raw)
    if name == "vlae" and shape[1] != 28:
        with pytest.raises(ValueError, match="vlae's ladder takes 28x28 images"):
            Trainer(cfg)
        return
    trainer = Trainer(cfg)
    x, y = trainer.data.batch(torch.arange(4))
    assert trainer.model.decode(trainer.model.encode(x)[0]).shape == (4, *shape)
    result = trainer.fit()
    assert result.steps == 4 and np.isfinite(result.test["elbo"])


def test_a_network_that_cannot_take_the_datas_images_is_refused_before_a_study_starts(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    np.savez("faces.npz", train_x=images(20, (3, 40, 40)), test_x=images(5, (3, 40, 40)))
    raw = yaml.safe_load((REPO / "studies" / "cpu" / "geco.yaml").read_text())
    raw["data"] = {"dataset": "tensors", "root": "faces.npz", "pixels": "gaussian"}
    raw["model"] = {"name": "conv", "latent_dim": 8}
    Path("study.yaml").write_text(yaml.safe_dump(raw))
    assert main(["validate", "study.yaml"]) == 2
    err = capsys.readouterr().err
    assert (
        "data.dataset tensors: images are 3x40x40: model conv takes square images of 28, 32" in err
    )
    assert main(["validate", "study.yaml", "--set", "data.image_size=32"]) == 0

"""hw_gan: model shapes and sizes, the three evaluation measures on hand-built and known
cases, the GAN task's update order, learning on a two-mode set, resume, the model file, bad
input, and the train / sample / evaluate commands end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.data import DataError
from core.errors import UserError

from core.inference import count_parameters
from hw_gan.metrics import (copy_ratio, gradient_magnitude, gradient_magnitude_ratio, hog_two_sample_test,
                            laplacian_sharpness, loo_1nn_accuracy, nearest_neighbours, sharpness_ratio, two_sample_test)
from hw_gan.models import Discriminator, Generator, check_image_size


pytestmark = pytest.mark.usefixtures("one_thread")


# -- models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_generator_and_discriminator_shapes_at_each_size(size):
    torch.manual_seed(0)
    g, d = Generator(size, latent=16, width=8), Discriminator(size, width=8)
    images = g(torch.randn(3, 16))
    assert images.shape == (3, 3, size, size)
    with torch.no_grad():
        g.net[-2].weight *= 1000                       # huge pre-activations: Tanh saturates, never beyond
    saturated = g(torch.randn(3, 16))
    assert saturated.abs().max() <= 1.0 and saturated.abs().max() > 0.999
    assert d(images).shape == (3,)
    assert g(torch.randn(2, 16, 1, 1)).shape == (2, 3, size, size)   # the course's (N, latent, 1, 1)


def test_parameter_counts_are_the_courses_at_64_px():
    # bias-free 4x4 convolutions plus BatchNorm's scale and shift per channel
    d_convs = 16 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 1)
    g_convs = 16 * (128 * 512 + 512 * 256 + 256 * 128 + 128 * 64 + 64 * 3)
    bn = 2 * (64 + 128 + 256 + 512)
    assert count_parameters(Discriminator(64, 64)) == d_convs + bn == 2_765_696    # the course's 2.77 M
    assert count_parameters(Generator(64, 128, 64)) == g_convs + bn == 3_806_080   # the course's 3.81 M


@pytest.mark.parametrize("size", [16, 64])
def test_nearest_upsampling_generator_shapes_layers_and_parameters(size):
    torch.manual_seed(0)
    g = Generator(size, latent=16, width=8, upsample="nearest")
    assert g(torch.randn(3, 16)).shape == (3, 3, size, size) and g.upsample == "nearest"
    kinds = [type(m) for m in g.net]
    n_blocks = int(np.log2(size)) - 2
    assert kinds.count(torch.nn.Upsample) == kinds.count(torch.nn.Conv2d) == n_blocks     # one per doubling
    assert kinds.count(torch.nn.ConvTranspose2d) == 1                                     # latent -> 4x4 only
    assert all(m.kernel_size == (3, 3) and m.bias is None for m in g.net if isinstance(m, torch.nn.Conv2d))
    # a 3x3 kernel where the course's has 4x4: 9/16 of the stride-2 blocks' weights, the first layer as it is
    course = Generator(64, 128, 64)
    assert [type(m) for m in course.net].count(torch.nn.ConvTranspose2d) == 5 and course.upsample == "transpose"
    first, bn = 16 * 128 * 512, 2 * (64 + 128 + 256 + 512)
    assert count_parameters(Generator(64, 128, 64, "nearest")) == \
        first + 9 * (512 * 256 + 256 * 128 + 128 * 64 + 64 * 3) + bn
    with pytest.raises(ValueError, match="--upsample bilinear: expected one of transpose, nearest"):
        Generator(16, 8, 4, upsample="bilinear")


def test_nearest_upsampling_draws_no_checkerboard_from_a_flat_map():
    # a constant map through one 2x upsampling layer with random weights: the transposed
    # convolution sums a different quarter of its kernel at each pixel parity (a period-2
    # pattern); nearest + 3x3 sums the whole kernel everywhere away from the border
    from hw_gan.models import upsampling

    torch.manual_seed(0)
    x = torch.ones(1, 1, 8, 8)
    for kind, flat in (("transpose", False), ("nearest", True)):
        layers = torch.nn.Sequential(*upsampling(1, 1, kind))
        with torch.no_grad():
            inner = layers(x)[0, 0, 2:-2, 2:-2]
        assert inner.shape == (12, 12)
        torch.testing.assert_close(inner[::2, ::2], inner[0, 0].expand(6, 6))     # each parity is flat...
        assert torch.allclose(inner, inner[0, 0].expand(12, 12)) is flat, kind    # ...all four alike only here


@pytest.mark.parametrize("size", [48, 100, 8, 512])
def test_image_sizes_that_are_not_powers_of_two_in_range_are_refused(size):
    with pytest.raises(ValueError, match=rf"--image-size {size}: must be a power of two from 16 to 256"):
        check_image_size(size)


# -- leave-one-out 1-NN ----------------------------------------------------------------------------
def test_loo_1nn_on_a_hand_built_case():
    real = np.array([[0.0], [0.4], [3.2]])
    fake = np.array([[1.0], [5.0], [5.5]])
    # nearest other point: 0 -> 0.4 (right), 0.4 -> 0 (right), 3.2 -> 5 (wrong),
    # 1 -> 0.4 (wrong), 5 -> 5.5 (right), 5.5 -> 5 (right): 4 of 6
    assert loo_1nn_accuracy(real, fake) == pytest.approx(4 / 6)


def test_loo_1nn_matches_sklearn_leave_one_out():
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    real, fake = rng.normal(0, 1, (30, 4)), rng.normal(1, 1, (30, 4))
    x, y = np.concatenate([real, fake]), np.r_[np.ones(30), np.zeros(30)]
    expected = cross_val_score(KNeighborsClassifier(n_neighbors=1), x, y, cv=LeaveOneOut()).mean()
    assert loo_1nn_accuracy(real, fake) == pytest.approx(expected)
    assert 0.55 < expected < 0.9            # a case that is neither trivial nor chance


def test_loo_1nn_of_identical_sets_is_zero_and_of_separated_sets_one():
    # each image's nearest other image is its twin in the other set: every vote is wrong
    points = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 7.0], [10.0, 10.0], [-4.0, 2.5]])
    assert loo_1nn_accuracy(points, points.copy()) == 0.0
    images = torch.linspace(-1, 1, 6 * 3 * 4 * 4).view(6, 3, 4, 4)
    assert loo_1nn_accuracy(images, images.clone()) == 0.0
    # two tight groups 100 apart: every nearest other image is of the same set
    assert loo_1nn_accuracy(points * 0.01, points * 0.01 + 100.0) == 1.0
    # one real image among the fakes is voted fake, and its nearest fake votes real: 2 wrong of 6
    real, fake = np.array([[0.0], [0.1], [5.0]]), np.array([[5.05], [9.0], [9.1]])
    assert loo_1nn_accuracy(real, fake) == pytest.approx(4 / 6)


def test_loo_1nn_is_one_when_separated_and_near_half_for_one_distribution():
    rng = np.random.default_rng(1)
    assert loo_1nn_accuracy(rng.normal(0, 1, (100, 10)), rng.normal(8, 1, (100, 10))) == 1.0
    same = loo_1nn_accuracy(rng.normal(0, 1, (300, 10)), rng.normal(0, 1, (300, 10)))
    assert abs(same - 0.5) < 0.06           # standard error 0.02


# -- gradient magnitude --------------------------------------------------------------------------
def test_gradient_magnitude_of_ramps_and_of_blurred_images():
    ramp = torch.arange(8.0).expand(1, 3, 8, 8) * 0.1                 # +0.1 per pixel along x
    assert gradient_magnitude(ramp).item() == pytest.approx(0.1)
    diagonal = ramp + ramp.transpose(-1, -2)                           # +0.1 along x and y
    assert gradient_magnitude(diagonal).item() == pytest.approx(0.1 * 2 ** 0.5)
    torch.manual_seed(0)
    noise = torch.rand(20, 3, 32, 32)
    blurred = F.avg_pool2d(noise, 3, 1, 1, count_include_pad=False)
    assert gradient_magnitude_ratio(noise, noise) == pytest.approx(1.0)
    assert gradient_magnitude_ratio(noise, blurred) < 0.5


def test_sample_grid_is_torchvisions_make_grid():
    from torchvision.utils import make_grid

    from hw_gan.images import grid_image, to_pil

    images = torch.rand(10, 3, 5, 7) * 2 - 1
    expected = to_pil(make_grid(images, nrow=4, padding=2, pad_value=1.0))
    assert np.array_equal(np.asarray(grid_image(images, ncols=4)), np.asarray(expected))


# -- classifier two-sample test ----------------------------------------------------------------------
def blob_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Random images: three coloured Gaussian blobs on a noisy grey background, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images = 0.1 * torch.randn(n, 3, size, size, generator=g)
    for _ in range(3):
        centre = torch.rand(n, 2, generator=g) * size
        radius = 1.5 + 2.5 * torch.rand(n, generator=g)
        colour = torch.rand(n, 3, generator=g) * 2 - 1
        blob = torch.exp(-((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2) / (2 * radius[:, None, None] ** 2))
        images += colour[:, :, None, None] * blob[:, None]
    return images.clamp(-1, 1)


def test_two_sample_test_is_near_half_for_one_distribution_and_near_one_for_blur():
    same = two_sample_test(blob_images(200, seed=1), blob_images(200, seed=2), epochs=10)
    assert abs(same["accuracy"] - 0.5) < 0.1, same         # standard error 0.025
    assert same["p_value"] > 0.01
    real = blob_images(200, seed=3)
    blurred = F.avg_pool2d(real, 3, 1, 1, count_include_pad=False)
    blur = two_sample_test(real, blurred, epochs=20)
    assert blur["accuracy"] > 0.9, blur
    assert blur["p_value"] < 1e-10


def test_two_sample_test_tells_real_faces_from_blurred_ones():
    """The 100 real photos of scikit-image's lfw_subset (25 px, so already soft at 32 px) against
    the same photos through a 3x3 box blur: the test's default classifier (30 epochs) finds the
    blur (measured 0.90; on 150 + 150 shared LFW faces at 32 px, 0.90, with 0.49 for two halves)."""
    from hw_gan.data import builtin_faces

    faces = builtin_faces(32).images
    blurred = F.avg_pool2d(faces, 3, 1, 1, count_include_pad=False)
    result = two_sample_test(faces, blurred)
    assert result["accuracy"] > 0.85 and result["p_value"] < 1e-10, result


# -- the GAN task --------------------------------------------------------------------------------
def tiny_gan(size: int = 16, latent: int = 8, width: int = 8, seed: int = 0, **options):
    from hw_gan.task import GANTask

    torch.manual_seed(seed)
    return GANTask(Generator(size, latent, width), Discriminator(size, width), lr=2e-3, **options)


def test_generator_loss_never_reaches_the_discriminators_next_step():
    """Each discriminator step uses exactly the gradient of its own loss, replayed from the same
    weights, batch and random state; and when the generator steps, the discriminator holds no
    gradient at all."""
    import copy

    from core.trainer import Trainer
    from hw_gan.task import GANTask

    recorded, g_step_d_grads = [], []

    class Recording(GANTask):
        def configure_optimizers(self):
            opt_d, opt_g = super().configure_optimizers()
            opt_d.register_step_pre_hook(lambda opt, *_: recorded[-1].update(
                grads=[p.grad.clone() for p in self.discriminator.parameters()]))
            opt_g.register_step_pre_hook(lambda opt, *_: g_step_d_grads.extend(
                p.grad for p in self.discriminator.parameters()))
            return [opt_d, opt_g]

        def training_step(self, batch):
            recorded.append({"state": copy.deepcopy(self.state_dict()), "rng": torch.get_rng_state(),
                             "batch": batch.clone()})
            return super().training_step(batch)

    torch.manual_seed(0)
    task = Recording(Generator(16, 8, 8), Discriminator(16, 8), lr=1e-2)
    data = torch.utils.data.DataLoader(two_mode_images(24), batch_size=8, shuffle=True)
    Trainer(max_epochs=2, monitor=None, progress=False, log_every_epoch=False).fit(task, data)
    assert len(recorded) == 6

    for step in recorded:
        replay = GANTask(Generator(16, 8, 8), Discriminator(16, 8))
        replay.load_state_dict(step["state"])
        torch.set_rng_state(step["rng"])
        fake = replay.generator(replay.noise(len(step["batch"])))
        loss, _ = replay.discriminator_step_loss(step["batch"], fake)
        loss.backward()
        for p, seen in zip(replay.discriminator.parameters(), step["grads"]):
            torch.testing.assert_close(seen, p.grad, rtol=1e-4, atol=1e-6)
    assert len(g_step_d_grads) == 6 * len(list(task.discriminator.parameters()))
    assert all(grad is None for grad in g_step_d_grads)


def two_mode_points(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    """A tiny two-mode image set: half the images dark with a bright left half, half bright
    with a dark top half, plus a little noise; (n, 3, size, size) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), -0.6)
    half = size // 2
    images[: n // 2, :, :, :half] = 0.6
    images[n // 2:] = 0.6
    images[n // 2:, :, :half, :] = -0.6
    return (images + 0.05 * torch.randn(images.shape, generator=g)).clamp(-1, 1)


def two_mode_images(n: int, seed: int = 0) -> torch.Tensor:
    return two_mode_points(n, seed=seed, size=16)


def nearest_distance(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Mean Euclidean distance (per pixel, RMS) from each sample to its nearest data image."""
    return (torch.cdist(samples.flatten(1), data.flatten(1)).min(1).values / samples[0].numel() ** 0.5).mean().item()


def test_short_run_moves_samples_towards_a_two_mode_set():
    from core.trainer import Trainer

    data = two_mode_images(64)                        # 32 of each mode; RMS 0.05 around its mode
    task = tiny_gan()
    before = nearest_distance(task.sample(), data)    # 0.60: grey noise
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True, drop_last=True)
    Trainer(max_epochs=40, monitor=None, progress=False, log_every_epoch=False, seed=0).fit(task, loader)
    samples = task.sample()
    after = nearest_distance(samples, data)           # measured 0.43 after 160 steps
    assert after < 0.8 * before, (before, after)
    mode_of_nearest = torch.cdist(samples.flatten(1), data.flatten(1)).argmin(1) >= 32
    assert 0.1 < mode_of_nearest.float().mean() < 0.9  # both modes drawn


def test_refreshed_batchnorm_statistics_are_those_of_the_latents():
    from hw_gan.models import refresh_batchnorm

    torch.manual_seed(0)
    generator = Generator(16, latent=8, width=4)
    first_bn = generator.net[1]
    first_bn.running_mean.fill_(5.0)                # stale statistics, as an EMA of weights inherits
    refresh_batchnorm(generator, n=256, batch_size=64, seed=3)
    g = torch.Generator().manual_seed(3)
    latents = torch.cat([torch.randn(64, 8, generator=g) for _ in range(4)])
    with torch.no_grad():
        expected = generator.net[0](latents[:, :, None, None]).mean((0, 2, 3))
    torch.testing.assert_close(first_bn.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert not generator.training


# -- commands end to end ---------------------------------------------------------------------------
def write_faces(folder, n: int = 40, size: int = 20, seed: int = 0) -> None:
    """``n`` two-mode PNG images of ``size`` px (resized to --image-size when read)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = two_mode_points(n, seed, size)
    for i, image in enumerate(images):
        array = ((image.permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"face_{i:03d}.png")


TINY = ["--image-size", "16", "--width", "4", "--latent", "8", "--batch-size", "8", "--holdout", "8",
        "--device", "cpu"]


@pytest.fixture
def face_folder(tmp_path):
    root = tmp_path / "faces_dataset_small"
    write_faces(root / "faces")                      # the course's ImageFolder layout
    return root


def test_resumed_run_reproduces_the_uninterrupted_one(face_folder, tmp_path, runs_root):
    from core.checkpoint import read_weights_only
    from hw_gan import load_model
    from hw_gan.models import refresh_batchnorm
    from hw_gan.train import main

    common = ["--data-dir", str(face_folder), *TINY, "--deterministic", "--ema", "0.9"]
    main([*common, "--epochs", "3", "--run-dir", str(tmp_path / "full")])
    main([*common, "--epochs", "1", "--run-dir", str(tmp_path / "part")])
    main([*common, "--epochs", "3", "--run-dir", str(tmp_path / "resumed"), "--resume", str(tmp_path / "part/last.pt")])
    full, resumed = (read_weights_only(tmp_path / name / "last.pt") for name in ("full", "resumed"))
    assert full["epoch"] == resumed["epoch"] == 3
    for part in ("task", "ema"):                    # trained and averaged weights alike
        for key, value in full[part].items():
            torch.testing.assert_close(resumed[part][key], value, rtol=0, atol=0, msg=key)
    assert full["optimizers"][1]["state"][0]["step"] == resumed["optimizers"][1]["state"][0]["step"] == 12
    # model.pt holds the averaged generator, its BatchNorm statistics refreshed for the average
    loaded = load_model(tmp_path / "full")
    assert loaded.extras["ema"] == 0.9 and loaded.config == {"image_size": 16, "latent": 8, "width": 4,
                                                                    "upsample": "nearest"}
    expected = Generator(16, 8, 4, "nearest")
    expected.load_state_dict({k.removeprefix("generator."): v for k, v in full["ema"].items()
                              if k.startswith("generator.")})
    refresh_batchnorm(expected)
    state = loaded.model.state_dict()
    assert set(state) == set(expected.state_dict())
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    trained = full["task"]["generator.net.0.weight"]         # the trained weights differ from the average
    assert not torch.equal(state["net.0.weight"], trained)


def test_train_sample_evaluate_end_to_end(face_folder, tmp_path, runs_root, capsys):
    import json

    from hw_gan import evaluate, sample, train

    run = tmp_path / "run"
    metrics = train.main(["--data-dir", str(face_folder), *TINY, "--epochs", "2", "--run-dir", str(run)])
    assert metrics["epochs"] == 2 and metrics["steps"] == 2 * (32 // 8)
    for name in ("args.json", "history.csv", "last.pt", "model.pt", "metrics.json", "split.json", "plots/history.png",
                 "plots/progress.gif", "plots/samples/epoch_001.png", "plots/samples/epoch_002.png"):
        assert (run / name).is_file(), name
    gif = Image.open(run / "plots/progress.gif")
    grid = Image.open(run / "plots/samples/epoch_002.png")
    assert grid.size == (2 + 8 * 18, 2 + 8 * 18) and gif.size == (2 + 4 * 18, 2 + 4 * 18)   # 16-px faces, 2-px gaps
    assert gif.n_frames == 2
    gif.seek(1)
    assert np.abs(np.asarray(gif.convert("RGB"), dtype=int)   # the last grid's top-left 4 x 4 (GIF palette aside)
                  - np.asarray(grid.convert("RGB"), dtype=int)[:74, :74]).mean() < 3
    history = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss_d", "train_loss_g", "train_real_score", "train_fake_score"} <= set(history)
    split = json.loads((run / "split.json").read_text())
    assert len(split["holdout"]) == 8 and len(split["train"]) == 32 and not set(split["holdout"]) & set(split["train"])

    files = sample.main(["--run", str(run), "--n", "5", "--out", str(tmp_path / "pngs"), "--grid", str(tmp_path / "g.png")])
    assert len(files) == 6 and Image.open(files[0]).size == (16, 16)
    again = sample.main(["--run", str(run), "--n", "5", "--out", str(tmp_path / "pngs2")])
    assert [np.asarray(Image.open(a)).tolist() for a in files[:5]] == [np.asarray(Image.open(b)).tolist() for b in again]

    from core.predictor import load_predictor, render

    result = load_predictor(run).generate(seed=0, count=5)   # the web service's view of the run
    assert result["kind"] == "generation" and result["count"] == 5
    first = np.asarray(render(result))[2:18, 2:18]             # the grid's first image, as sample wrote it
    assert first.tolist() == np.asarray(Image.open(files[0])).tolist()

    scores = evaluate.main(["--run", str(run), "--folds", "2", "--baseline", "--run-name", "eval", "--size", "16"])
    assert scores["n"] == 8 and scores["size"] == 16   # the held-out faces, at the model's own size
    for name in ("metrics.json", "plots/tsne.png", "plots/generated.png", "plots/real.png", "plots/pca_gaussian.png",
                 "plots/nearest_training.png"):
        assert (run / "eval" / name).is_file(), name
    assert "data: the run's 8 held-out faces" in capsys.readouterr().out
    # the figures of the held-out faces against the loaded generator's first 8 samples of seed 0
    from hw_gan import load_model
    from hw_gan.data import real_faces
    from hw_gan.models import generate

    held_out, trained_on = real_faces(run, None, 16)
    held_out = held_out.subset(torch.randperm(8, generator=torch.Generator().manual_seed(0)).tolist())  # evaluate's order
    fake = generate(load_model(run).model, 8, seed=0)
    assert scores["loo_1nn_accuracy"] == round(loo_1nn_accuracy(held_out.images, fake), 4)
    assert scores["gradient_ratio"] == round(gradient_magnitude_ratio(held_out.images, fake), 4)
    assert scores["sharpness_ratio"] == round(sharpness_ratio(held_out.images, fake), 4)
    assert scores["hog_two_sample_accuracy"] == round(hog_two_sample_test(held_out.images, fake, folds=2)["accuracy"], 4)
    assert scores["copy_ratio"] == round(copy_ratio(trained_on.images, held_out.images, fake), 4)
    assert "pca_gaussian_loo_1nn_accuracy" in scores and "pca_gaussian_hog_two_sample_accuracy" in scores
    # by default the judges compare at the course's 64 px: the 16-px samples are upsampled
    at_64 = evaluate.main(["--run", str(run), "--folds", "2", "--no-tsne", "--run-name", "eval64"])
    assert at_64["size"] == 64 and "comparing 8 real and 8 generated images at 64 px (generated at 16 px)" \
        in capsys.readouterr().out
    real_64, _ = real_faces(run, None, 64)
    fake_64 = torch.nn.functional.interpolate(fake, size=(64, 64), mode="bilinear", align_corners=False).clamp(-1, 1)
    assert at_64["sharpness_ratio"] == round(sharpness_ratio(real_64.images, fake_64), 4)
    with pytest.raises(UserError, match=r"--n 9: larger than the 8 real images available"):
        evaluate.main(["--run", str(run), "--n", "9", "--no-tsne"])


def test_model_file_holds_the_last_epochs_generator(face_folder, tmp_path, runs_root):
    from core.checkpoint import read_weights_only
    from core.predictor import load_predictor
    from hw_gan import load_model
    from hw_gan.models import generate
    from hw_gan.train import main

    run = tmp_path / "run"
    main(["--data-dir", str(face_folder), *TINY, "--epochs", "1", "--ema", "0", "--run-dir", str(run)])
    loaded = load_model(run)
    assert (loaded.homework, loaded.kind, loaded.name, loaded.extras) == ("hw_gan", "generation", "run", {"ema": None})
    assert not loaded.model.training and loaded.settings["epochs"] == 1 and loaded.metrics["steps"] == 4
    last = read_weights_only(run / "last.pt")["task"]
    state = loaded.model.state_dict()
    assert set(state) == {k.removeprefix("generator.") for k in last if k.startswith("generator.")}
    for key, value in state.items():
        torch.testing.assert_close(value, last[f"generator.{key}"], rtol=0, atol=0, msg=key)
    trained = Generator(16, 8, 4, "nearest")                      # the default recipe's generator
    trained.load_state_dict({k.removeprefix("generator."): v for k, v in last.items() if k.startswith("generator.")})
    torch.testing.assert_close(generate(loaded.model, 6, seed=2), generate(trained.eval(), 6, seed=2), rtol=0, atol=0)
    grid = load_predictor(run).generate(seed=2, count=6)
    assert (grid["count"], grid["width"], grid["height"]) == (6, 2 + 3 * 18, 2 + 2 * 18)   # 3 x 2 images of 16 px

    (run / "model.pt").unlink()                                    # a run of the older code: last.pt only
    for read in (load_model, load_predictor):
        with pytest.raises(UserError, match="train it again") as info:
            read(run)
        assert "\n" not in str(info.value)


def test_model_file_keeps_the_upsampling(face_folder, tmp_path, runs_root):
    from hw_gan import load_model
    from hw_gan.models import generate
    from hw_gan.train import main

    run = tmp_path / "run"
    main(["--data-dir", str(face_folder), *TINY, "--epochs", "1", "--upsample", "nearest", "--run-dir", str(run)])
    loaded = load_model(run)
    assert loaded.config["upsample"] == "nearest" and loaded.model.upsample == "nearest"
    assert any(isinstance(m, torch.nn.Upsample) for m in loaded.model.net)
    assert generate(loaded.model, 3, seed=1).shape == (3, 3, 16, 16)


# -- bad input -------------------------------------------------------------------------------------
def test_empty_folder_is_a_clear_error(tmp_path):
    from hw_gan.train import main

    (tmp_path / "empty" / "faces").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty: no image files .* in it or its sub-folders"):
        main(["--data-dir", str(tmp_path / "empty"), *TINY])


def test_grey_and_rgba_images_are_converted_and_corrupt_ones_named(tmp_path, capsys):
    from hw_gan.data import load_faces

    folder = tmp_path / "flat"
    write_faces(folder, n=4)
    Image.new("L", (30, 20), 128).save(folder / "grey.png")
    Image.new("RGBA", (20, 30), (255, 0, 0, 128)).save(folder / "rgba.png")
    (folder / "broken.png").write_bytes(b"not a png")
    faces = load_faces(folder, 16)
    out = capsys.readouterr().out
    assert len(faces) == 6 and faces.images.shape == (6, 3, 16, 16)
    assert "converted 2 non-RGB image(s) to RGB: grey.png (L), rgba.png (RGBA)" in out
    assert "skipped 1 unreadable file(s):" in out and "broken.png" in out
    grey = faces.images[faces.names.index("grey.png")]
    torch.testing.assert_close(grey, torch.full_like(grey, 128 / 127.5 - 1))
    (folder / "grey.png").unlink()
    for path in folder.glob("*.png"):
        path.write_bytes(b"broken")
    with pytest.raises(DataError, match=r"none of its 6 image file\(s\) could be read"):
        load_faces(folder, 16)


def test_bad_options_are_refused_before_any_work(tmp_path, capsys):
    from hw_gan.train import main

    for option, value, message in (("--image-size", "48", "expected a power of two from 16 to 256 (32, 64, 128)"),
                                   ("--label-smoothing", "1.0", "expected a number in [0, 1)"),
                                   ("--width", "0", "expected an integer >= 1"),
                                   ("--r1", "-1", "expected a number >= 0"),
                                   ("--ema", "1", "expected a number in [0, 1)")):
        with pytest.raises(SystemExit) as exit_info:
            main([option, value, "--run-dir", str(tmp_path / "never")])
        assert exit_info.value.code == 2
        assert f"argument {option}: {message}, got '{value}'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--augment", "color,blur", "--run-dir", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "argument --augment: unknown augmentation blur: expected a comma-separated subset of color, translation, "
        "cutout (or none)")
    with pytest.raises(SystemExit) as exit_info:
        main(["--upsample", "bilinear", "--run-dir", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "argument --upsample: invalid choice: 'bilinear' (choose from 'transpose', 'nearest')")
    assert not (tmp_path / "never").exists()
    from hw_gan.evaluate import main as evaluate_main

    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--run", str(tmp_path / "never"), "--size", "8"])
    assert exit_info.value.code == 2 and "argument --size: expected an integer >= 16, got '8'" in capsys.readouterr().err


# -- real data -------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_short_run_on_the_shared_faces_lowers_the_two_sample_accuracy(dls_data, tmp_path, runs_root):
    """13 epochs at 16 px against the first epoch, both scored on the 100 held-out faces. The
    classifier gets 2 epochs: enough to tell noise from faces, not yet saturated by the small
    artefacts that give away any short run (with the default 30 epochs both score about 1.0)."""
    from pathlib import Path

    from conftest import real_dataset
    from hw_gan import load_model, train
    from hw_gan.data import real_faces
    from hw_gan.models import generate

    root = real_dataset(dls_data, "faces/lfw_gan")
    common = ["--data-dir", str(root), "--image-size", "16", "--width", "16", "--lr", "5e-4", "--device", "cpu",
              "--batch-size", "32", "--loss", "bce", "--augment", "none", "--no-spectral-norm", "--ema", "0",
              "--precision", "32"]
    train.main([*common, "--epochs", "1", "--run-dir", str(tmp_path / "first")])
    train.main([*common, "--epochs", "13", "--run-dir", str(tmp_path / "later"), "--resume", str(tmp_path / "first/last.pt")])
    held_out, _ = real_faces(Path(tmp_path / "first"), None, 16)
    assert len(held_out) == 100
    scores = {}
    for name in ("first", "later"):
        fake = generate(load_model(tmp_path / name).model, 100, seed=0)
        scores[name] = (two_sample_test(held_out.images, fake, epochs=2)["accuracy"],
                        loo_1nn_accuracy(held_out.images, fake))
    assert scores["first"][0] > 0.95 and scores["first"][1] > 0.9, scores    # measured 1.0 and 0.975
    assert scores["later"][0] < scores["first"][0] - 0.08, scores           # measured 0.855
    assert scores["later"][1] < scores["first"][1] - 0.1, scores            # measured 0.775


# -- DiffAugment, R1, the judges added for 64 px -------------------------------------------------

def test_translation_shifts_whole_pixels_and_pads_with_zeros():
    from hw_gan.augment import translation

    x = torch.arange(1, 1 + 2 * 8 * 8, dtype=torch.float).reshape(2, 1, 8, 8)
    torch.manual_seed(0)
    out = translation(x)
    for image, shifted in zip(x[:, 0], out[:, 0]):
        # find the shift: the output's non-zero pixels are the input moved by (dy, dx), |d| <= 1
        matches = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)
                   if torch.equal(shifted, torch.nn.functional.pad(image, (1, 1, 1, 1))[1 - dy:9 - dy, 1 - dx:9 - dx])]
        assert len(matches) == 1


def test_cutout_zeroes_one_half_side_square_and_color_keeps_the_gradient():
    from hw_gan.augment import color, cutout, diff_augment, parse_policy

    torch.manual_seed(0)
    out = cutout(torch.ones(64, 3, 16, 16))
    zero = (out == 0).all(1)                       # the same pixels in every channel
    assert ((out == 0) | (out == 1)).all()
    sides = zero.sum((1, 2))
    assert sides.max() == 64 and (sides > 0).all()  # an 8 x 8 square, cut by the border for some
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    color(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert parse_policy("color, cutout") == ("color", "cutout") and parse_policy("none") == ()
    assert torch.equal(diff_augment(x, ()), x)
    with pytest.raises(ValueError, match="unknown augmentation blur: expected a comma-separated subset of "
                                         "color, translation, cutout"):
        parse_policy("color,blur")


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm():
    from hw_gan.task import r1_penalty

    w = torch.tensor([1.0, -2.0, 3.0])
    x = torch.randn(5, 3, requires_grad=True)
    assert r1_penalty(x @ w, x).item() == pytest.approx(14.0)   # ||w||^2 for every image
    logits = (x ** 2).sum(1)                                      # gradient 2x: mean of 4 ||x||^2
    assert r1_penalty(logits, x).item() == pytest.approx(float((4 * x.detach() ** 2).sum(1).mean()), rel=1e-6)


def test_hog_test_tells_blur_and_not_one_distribution():
    from hw_gan.data import builtin_faces

    faces = builtin_faces(64).images
    blurred = torch.nn.functional.avg_pool2d(faces, 5, 1, 2)
    assert hog_two_sample_test(faces, blurred)["accuracy"] > 0.9
    half = hog_two_sample_test(faces[::2], faces[1::2])
    assert half["accuracy"] < 0.7 and half["p_value"] > 0.01


def test_laplacian_sharpness_of_flat_and_checkerboard_images_and_its_ratio():
    flat = torch.zeros(2, 3, 8, 8)
    board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1   # 0/1 after [-1,1] -> [0,1]
    board = board.expand(2, 3, 8, 8)
    assert laplacian_sharpness(flat).tolist() == [0.0, 0.0]
    assert laplacian_sharpness(board).tolist() == pytest.approx([4.0, 4.0])
    assert sharpness_ratio(board, flat) == 0.0 and sharpness_ratio(board, board) == pytest.approx(1.0)


def test_nearest_neighbours_and_copy_ratio():
    pool = torch.tensor([[0.0], [10.0], [3.0]]).reshape(3, 1, 1, 1)
    index, distance = nearest_neighbours(torch.tensor([[9.0], [1.0]]).reshape(2, 1, 1, 1), pool, k=2)
    assert index.tolist() == [[1, 2], [0, 2]] and distance.ravel().tolist() == pytest.approx([1.0, 6.0, 1.0, 2.0])
    unseen = torch.tensor([[5.0], [6.5]]).reshape(2, 1, 1, 1)    # 2 and 3.5 from the pool: median 2.75
    assert copy_ratio(pool, unseen, pool[:2]) == 0.0              # copies of training images
    assert copy_ratio(pool, unseen, unseen) == 1.0


def test_sample_grids_are_due_about_frames_times():
    from types import SimpleNamespace

    from hw_gan.images import SampleGrids

    grids = SampleGrids("unused", frames=10)
    due = [e for e in range(1, 101) if grids.due(SimpleNamespace(epoch=e, max_epochs=100, should_stop=False))]
    assert due == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert grids.due(SimpleNamespace(epoch=37, max_epochs=100, should_stop=True))   # the last epoch of a stopped run


def test_recipes_course_flag_and_time_budget(capsys, monkeypatch):
    import core.device
    from hw_gan.train import BUILTIN_MINUTES, REAL_DATA_MINUTES, apply_recipe, build_parser

    monkeypatch.setattr(core.device, "native_bf16", lambda: True)
    assert apply_recipe(build_parser().parse_args(["--device", "cpu"]), builtin=True)["precision"] == "bf16"
    assert apply_recipe(build_parser().parse_args(["--device", "cpu", "--precision", "32"]), builtin=True)["precision"] == "32"
    monkeypatch.setattr(core.device, "native_bf16", lambda: False)
    assert apply_recipe(build_parser().parse_args(["--device", "cpu"]), builtin=True)["precision"] == "auto"
    parser = build_parser()
    args = parser.parse_args([])
    recipe = apply_recipe(args, builtin=False)
    assert (args.image_size, args.width, args.loss, args.augment, args.spectral_norm, args.ema, args.upsample) == \
        (64, 32, "bce", "color,translation,cutout", False, 0.999, "nearest")
    assert args.time_limit == recipe["time_limit"] == REAL_DATA_MINUTES == 15.0
    args = parser.parse_args(["--course", "--ema", "0.99"])
    apply_recipe(args, builtin=True)
    assert (args.image_size, args.width, args.batch_size, args.lr, args.loss, args.augment, args.spectral_norm,
            args.ema, args.upsample) == (64, 64, 128, 1e-4, "bce", "none", False, 0.99, "transpose")  # explicit wins
    assert args.time_limit == BUILTIN_MINUTES
    args = parser.parse_args(["--epochs", "3"])
    apply_recipe(args, builtin=False)
    assert args.time_limit is None and args.epochs == 3
    assert "15 minutes on real data" in " ".join(parser.format_help().split())
    with pytest.raises(SystemExit):
        parser.parse_args(["--augment", "color,blur"])
    assert "unknown augmentation blur" in capsys.readouterr().err


def test_r1_is_added_to_every_r1_every_th_discriminator_loss_with_its_weight():
    from hw_gan.task import GANTask, r1_penalty

    torch.manual_seed(0)
    task = GANTask(Generator(16, 8, 4), Discriminator(16, 4), loss="hinge", r1=0.5, r1_every=2)
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    fake = task.generator(task.noise(8)).detach()
    plain, _ = task.discriminator_step_loss(real, fake)        # step 1: no penalty
    with_r1, _ = task.discriminator_step_loss(real, fake)      # step 2: penalty, weighted by gamma / 2 * 2
    x = real.clone().requires_grad_(True)
    expected = 0.5 * 0.5 * 2 * r1_penalty(task.discriminator(x), x)
    assert (with_r1 - plain).item() == pytest.approx(expected.item(), rel=1e-5) and expected.item() > 0

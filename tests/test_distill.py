"""sowmeta.distillation: the KD loss, augmentation, resumable training equal to an uninterrupted run, output files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from sowmeta.distillation import CHECKPOINT, METRICS, STUDENT, DistillConfig, augment, distill, kd_loss
from sowmeta.errors import ConfigError, DataError, OutputExistsError
from sowmeta.evaluation.metrics import accuracy
from sowmeta.models import LoadedModel, load_model
from sowmeta.models.preprocess import Preprocessing

from conftest import tiny_net, write_image_folder
from synth_files import write_synth_h5

STUDENT_NAME = "conftest:tiny_net"
CONFIG = DistillConfig(epochs=2, batch_size=16)  # 3 batches per epoch, the last one short


def teacher() -> LoadedModel:
    return LoadedModel(tiny_net(4, seed=3), "conftest:tiny_net", None, 4, None, Preprocessing(crop=12))


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    """A 4-class synthesis file (10 images per class, 12 px) and a real test folder of the same classes."""
    return write_synth_h5(tmp_path / "synth.h5", classes=4, per_class=10), write_image_folder(tmp_path / "test", classes=4, per_class=3)


class Stop(Exception):
    pass


def test_kd_loss_equals_a_float64_computation():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 7, generator=g) * 3, torch.randn(6, 7, generator=g) * 3
    for temperature in (1.0, 4.0, 5.0):
        s64, t64 = s.double() / temperature, t.double() / temperature
        p_t = t64.exp() / t64.exp().sum(1, keepdim=True)
        log_p_t = t64 - t64.exp().sum(1, keepdim=True).log()
        log_p_s = s64 - s64.exp().sum(1, keepdim=True).log()
        expected = (p_t * (log_p_t - log_p_s)).sum(1).mean() * temperature**2
        assert kd_loss(s, t, temperature).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kd_loss(t, t, 5.0).abs().item() < 1e-6


def test_defaults_are_the_papers_recipe():
    """Sec. 4.3 of the paper / issue 5: T = 5, SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, flip + 4 px crops."""
    c = DistillConfig()
    assert (c.temperature, c.lr, c.momentum, c.weight_decay, c.batch_size, c.flip, c.pad) == (5.0, 0.1, 0.9, 5e-4, 128, True, 4)


def test_kd_loss_gradient_is_t_times_the_softened_probability_gap():
    """d/ds T² KL(p_t ‖ p_s) = T (p_s - p_t) / batch with p = softmax(·/T); for large T it tends to (s - t) / (C · batch).

    So the T² factor keeps the gradients' scale independent of T (Hinton et al. 2015, Sec. 2.1).
    """
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 10, generator=g, dtype=torch.float64), torch.randn(4, 10, generator=g, dtype=torch.float64)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)  # zero-mean logits, as the limit assumes
    for temperature in (1.0, 5.0, 20.0, 2000.0):
        es, et = (s / temperature).exp(), (t / temperature).exp()
        gap = es / es.sum(1, keepdim=True) - et / et.sum(1, keepdim=True)
        x = s.clone().requires_grad_(True)
        kd_loss(x, t, temperature).backward()
        assert torch.allclose(x.grad, temperature * gap / 4, rtol=1e-9, atol=1e-15)
    assert torch.allclose(x.grad, (s - t) / (10 * 4), rtol=1e-2, atol=1e-6)


def test_augment_flips_and_crops_from_the_padded_image():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).view(2, 3, 5, 5)
    out = augment(x, torch.Generator().manual_seed(1), pad=2)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(1), pad=2))
    assert torch.equal(augment(x, torch.Generator(), pad=0, flip=False), x)
    for i in range(2):
        padded = torch.nn.functional.pad(x[i : i + 1], (2, 2, 2, 2))[0]
        windows = [padded[:, a : a + 5, b : b + 5] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    flipped = augment(x.float(), torch.Generator().manual_seed(0), pad=0)
    assert all(torch.equal(flipped[i], x[i].float()) or torch.equal(flipped[i], x[i].float().flip(-1)) for i in range(2))


def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, data):
    synth, test = data
    whole = distill(synth, teacher(), STUDENT_NAME, test=test, out=tmp_path / "whole", config=CONFIG)

    def stop_in_epoch_2(p):
        if p.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        distill(synth, teacher(), STUDENT_NAME, test=test, out=tmp_path / "cut", config=CONFIG, progress=stop_in_epoch_2)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [CHECKPOINT]  # epoch 1's checkpoint only
    ckpt = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 1 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "history", "run"}
    group = ckpt["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["weight_decay"], group["initial_lr"]) == (0.9, 5e-4, 0.1)
    assert any("momentum_buffer" in v for v in ckpt["optimizer"]["state"].values())  # SGD with momentum, restored on resume

    seen = []
    resumed = distill(synth, teacher(), STUDENT_NAME, test=test, out=tmp_path / "cut", config=CONFIG, resume=True, progress=seen.append)
    assert {p.epoch for p in seen} == {2}
    a, b = whole.student.module.state_dict(), resumed.student.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("train_loss", "test_accuracy", "lr", "teacher_test_accuracy"):
        assert whole.metrics[key] == resumed.metrics[key]
    assert whole.metrics["lr"] == pytest.approx([0.1, 0.05])  # cosine over 2 epochs, stepped per epoch


def test_the_images_labels_are_not_used(tmp_path: Path, data):
    """The teacher's outputs are the targets: relabelling every image leaves the run unchanged, bit for bit."""
    import h5py

    synth, test = data
    relabelled = tmp_path / "relabelled.h5"
    relabelled.write_bytes(synth.read_bytes())
    with h5py.File(relabelled, "r+") as f:
        f["labels"][...] = f["labels"][:][::-1]
    one = DistillConfig(epochs=1, batch_size=16)
    a = distill(synth, teacher(), STUDENT_NAME, test=test, out=tmp_path / "a", config=one)
    b = distill(relabelled, teacher(), STUDENT_NAME, test=test, out=tmp_path / "b", config=one)
    assert a.metrics["train_loss"] == b.metrics["train_loss"]
    sa, sb = a.student.module.state_dict(), b.student.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_outputs_load_back_and_the_callers_rng_is_untouched(tmp_path: Path, data):
    synth, test = data
    t = teacher()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    result = distill(synth, t, STUDENT_NAME, test=test, out=tmp_path / "run", config=DistillConfig(epochs=1, batch_size=16))
    assert torch.equal(torch.get_rng_state(), before)
    assert not t.module.training and all(p.grad is None for p in t.module.parameters())
    metrics = json.loads((tmp_path / "run" / METRICS).read_text())
    assert metrics["config"] == DistillConfig(epochs=1, batch_size=16).to_dict()
    assert metrics["student"] == STUDENT_NAME and metrics["teacher"] == "conftest:tiny_net"
    assert len(metrics["test_accuracy"]) == 1 and metrics["test_images"] == 12
    assert metrics["teacher_test_accuracy"] == pytest.approx(accuracy(t, test))
    reloaded = load_model(STUDENT_NAME, weights=str(tmp_path / "run" / STUDENT), num_classes=4, preprocessing=t.preprocessing)
    assert accuracy(reloaded, test) == pytest.approx(metrics["final_test_accuracy"])
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / STUDENT), "pt") as f:
        meta = f.metadata()
    assert meta["arch"] == STUDENT_NAME and json.loads(meta["preprocessing"])["crop"] == 12


def test_output_directory_rules(tmp_path: Path, data):
    synth, test = data
    out = tmp_path / "run"
    one = DistillConfig(epochs=1, batch_size=40)
    distill(synth, teacher(), STUDENT_NAME, test=test, out=out, config=one)
    with pytest.raises(OutputExistsError, match="already exists"):
        distill(synth, teacher(), STUDENT_NAME, test=test, out=out, config=one)
    with pytest.raises(ConfigError, match="not both"):
        distill(synth, teacher(), STUDENT_NAME, test=test, out=out, config=one, resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="other settings .*lr"):
        distill(synth, teacher(), STUDENT_NAME, test=test, out=out, config=DistillConfig(epochs=1, batch_size=40, lr=0.05), resume=True)
    calls = []
    done = distill(synth, teacher(), STUDENT_NAME, test=test, out=out, config=one, resume=True, progress=calls.append)
    assert calls == [] and len(done.metrics["test_accuracy"]) == 1  # a finished run resumes to its result
    again = distill(synth, teacher(), STUDENT_NAME, test=test, out=out, config=one, overwrite=True)
    assert again.metrics["test_accuracy"] == done.metrics["test_accuracy"]  # same seed, same run
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError):
        distill(synth, teacher(), STUDENT_NAME, test=test, out=tmp_path / "file", config=one, resume=True)


def test_bad_input(tmp_path: Path, data):
    synth, test = data
    with pytest.raises(DataError, match="does not exist"):
        distill(tmp_path / "missing.h5", teacher(), STUDENT_NAME, test=test, out=tmp_path / "o")
    with pytest.raises(DataError, match="not a directory"):
        distill(synth, teacher(), STUDENT_NAME, test=synth, out=tmp_path / "o")
    with pytest.raises(DataError, match="6 classes"):
        distill(write_synth_h5(tmp_path / "six.h5", classes=6, per_class=1), teacher(), STUDENT_NAME, test=test, out=tmp_path / "o")
    for bad in ({"epochs": 0}, {"temperature": 0.0}, {"amp": "fp8"}, {"lr": -1.0}):
        with pytest.raises(ConfigError):
            DistillConfig(**bad)
    assert not (tmp_path / "o").exists()


def test_image_folder_data_and_worker_processes_give_the_same_run(tmp_path: Path, data, monkeypatch):
    """Any class-per-folder directory can be the data (the real-data baseline); decoding once into memory
    or streaming through worker processes changes nothing."""
    distill_module = importlib.import_module("sowmeta.distillation.training")

    _, test = data
    folder = write_image_folder(tmp_path / "real-train", classes=4, per_class=4)
    one = DistillConfig(epochs=1, batch_size=6)
    a = distill(folder, teacher(), STUDENT_NAME, test=test, out=tmp_path / "a", config=one, workers=0)
    monkeypatch.setattr(distill_module, "_IN_MEMORY_BYTES", 0)  # stream the training and test images instead
    b = distill(folder, teacher(), STUDENT_NAME, test=test, out=tmp_path / "b", config=one, workers=2)
    assert a.metrics["images"] == 16 and a.metrics["train_loss"] == b.metrics["train_loss"]
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
    sa, sb = a.student.module.state_dict(), b.student.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda_trains_resumes_and_saves(tmp_path: Path, data, amp: str):
    """Autocast on the GPU: the run finishes with finite losses, checkpoints the CUDA RNG, and a finished run resumes to it."""
    synth, test = data
    config = DistillConfig(epochs=2, batch_size=16, amp=amp)
    result = distill(synth, teacher(), STUDENT_NAME, test=test, out=tmp_path / "gpu", config=config, device="cuda")
    assert all(torch.isfinite(torch.tensor(result.metrics["train_loss"])))
    assert result.metrics["device"] == "cuda"
    ckpt = torch.load(tmp_path / "gpu" / CHECKPOINT, weights_only=True)
    assert "cuda" in ckpt["rng"] and ckpt["epoch"] == 2
    again = distill(synth, teacher(), STUDENT_NAME, test=test, out=tmp_path / "gpu", config=config, device="cuda", resume=True)
    assert again.metrics["test_accuracy"] == result.metrics["test_accuracy"]

"""The encoders against PyTorchVideo's X3D-M layout (names, shapes, counts from create_x3d 0.1.5, stored in
tests/data), Kinetics weight loading from synthetic checkpoints, and the dict interfaces of both profiles."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from avsurv.constants import (
    AUDIO_TENSOR_SHAPE,
    CLIP_FRAMES_SHAPE,
    DEFAULT_PROFILE,
    EMBEDDING_DIM,
    PROFILE_NAMES,
    VIDEO_TENSOR_SHAPE,
)
from avsurv.models import (
    PROFILES,
    X3D,
    AudioEncoder,
    AudioVisualModel,
    build_model,
    count_parameters,
    load_kinetics_x3d,
)
from avsurv.models.inputs import ForegroundInput

REFERENCE = json.loads((Path(__file__).parent / "data" / "pytorchvideo_x3d_m_state_dict.json").read_text())
EPG_REF = REFERENCE["x3d_m_epg_5x224_512"]
KINETICS_REF = REFERENCE["x3d_m_kinetics400_16x224"]
HEAD = ("blocks.5.proj.weight", "blocks.5.proj.bias")
VIDEO = VIDEO_TENSOR_SHAPE[1:]  # one crop: [3, 5, 224, 224]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def paper_x3d() -> X3D:
    return build_model("paper").encoders["visual"].eval()


def video(batch: int) -> torch.Tensor:
    return torch.rand(batch, *VIDEO)


def log_mel(batch: int) -> torch.Tensor:
    return torch.randn(batch, *AUDIO_TENSOR_SHAPE) * 20 - 40


def synthetic_kinetics_state() -> dict[str, torch.Tensor]:
    """Random tensors with the published Kinetics-400 X3D-M's names and shapes."""
    state = {}
    for name, shape in KINETICS_REF["state_dict"].items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.randint(1, 1000, shape, dtype=torch.int64)
        else:
            state[name] = torch.randn(shape)
    return state


# --- F_v against PyTorchVideo -------------------------------------------------------------------


def test_paper_x3d_state_dict_has_pytorchvideo_names_and_shapes(paper_x3d: X3D) -> None:
    ours = {name: list(tensor.shape) for name, tensor in paper_x3d.state_dict().items()}
    assert list(ours) == list(EPG_REF["state_dict"])  # same names, same order
    assert ours == EPG_REF["state_dict"]


def test_paper_x3d_parameter_count(paper_x3d: X3D) -> None:
    assert count_parameters(paper_x3d) == EPG_REF["n_params"] == 4_023_762


def test_reference_differs_from_kinetics_only_in_the_head() -> None:
    epg, kinetics = EPG_REF["state_dict"], KINETICS_REF["state_dict"]
    assert list(epg) == list(kinetics)
    assert [name for name in epg if epg[name] != kinetics[name]] == list(HEAD)


def test_kinetics_normalisation_is_inside_but_not_in_the_state_dict(paper_x3d: X3D) -> None:
    assert torch.allclose(paper_x3d.mean.flatten(), torch.tensor([0.45] * 3))
    assert torch.allclose(paper_x3d.std.flatten(), torch.tensor([0.225] * 3))
    assert not {"mean", "std"} & set(paper_x3d.state_dict())


def test_paper_x3d_embeds_one_clip(paper_x3d: X3D) -> None:
    with torch.no_grad():
        out = paper_x3d(video(1))
    assert list(out) == ["visual"]
    assert out["visual"].shape == (1, EMBEDDING_DIM)
    assert EPG_REF["output_shape_for_batch_2"] == [2, EMBEDDING_DIM]
    assert torch.isfinite(out["visual"]).all()


def test_paper_x3d_is_deterministic_in_eval_despite_head_dropout(paper_x3d: X3D) -> None:
    small = torch.rand(2, 3, 5, 64, 64)  # adaptive head pooling accepts any size; keeps the test quick
    with torch.no_grad():
        assert torch.equal(paper_x3d(small)["visual"], paper_x3d(small)["visual"])


def test_x3d_rejects_wrong_layout(paper_x3d: X3D) -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        paper_x3d(torch.rand(1, 5, 3, 64, 64))


# --- Kinetics-400 weights -----------------------------------------------------------------------


def assert_loaded(model: X3D, source: dict[str, torch.Tensor], head_before: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    for name in EPG_REF["state_dict"]:
        if name in HEAD:
            assert torch.equal(state[name], head_before[name]), name
        else:
            assert torch.equal(state[name], source[name]), name


def test_kinetics_weights_load_from_safetensors(tmp_path: Path) -> None:
    model, source = build_model("paper").encoders["visual"], synthetic_kinetics_state()
    head_before = {name: model.state_dict()[name].clone() for name in HEAD}
    save_file(source, tmp_path / "x3d_m.safetensors")
    report = load_kinetics_x3d(model, tmp_path / "x3d_m.safetensors")
    assert_loaded(model, source, head_before)
    assert set(report.skipped) == set(report.fresh) == set(HEAD)
    assert set(report.loaded) == set(source) - set(HEAD)


def test_kinetics_weights_load_from_pyth_checkpoint_with_module_prefix(tmp_path: Path) -> None:
    model, source = build_model("paper"), synthetic_kinetics_state()
    x3d = model.encoders["visual"]
    head_before = {name: x3d.state_dict()[name].clone() for name in HEAD}
    checkpoint = {"epoch": 200, "model_state": {f"module.{name}": value for name, value in source.items()}}
    torch.save(checkpoint, tmp_path / "X3D_M.pyth")
    report = load_kinetics_x3d(model, tmp_path / "X3D_M.pyth")  # the whole model: F_v is found inside
    assert_loaded(x3d, source, head_before)
    assert set(report.skipped) == set(HEAD)


def test_kinetics_plain_state_dict_with_model_prefix(tmp_path: Path) -> None:
    model, source = build_model("paper").encoders["visual"], synthetic_kinetics_state()
    torch.save({f"model.{name}": value for name, value in source.items()}, tmp_path / "x3d.pt")
    assert len(load_kinetics_x3d(model, tmp_path / "x3d.pt").loaded) == len(source) - len(HEAD)


def test_kinetics_shape_mismatch_raises_and_leaves_model_unchanged(tmp_path: Path) -> None:
    model, source = build_model("paper").encoders["visual"], synthetic_kinetics_state()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    source["blocks.3.res_blocks.0.branch2.conv_b.weight"] = torch.randn(216, 1, 5, 3, 3)
    save_file(source, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"conv_b\.weight has shape \[216, 1, 5, 3, 3\]") as caught:
        load_kinetics_x3d(model, tmp_path / "bad.safetensors")
    assert "\n" not in str(caught.value)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_kinetics_missing_backbone_key_raises(tmp_path: Path) -> None:
    source = synthetic_kinetics_state()
    del source["blocks.0.norm.running_var"]
    save_file(source, tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match=r"lacks 1 of the .* e\.g\. blocks\.0\.norm\.running_var"):
        load_kinetics_x3d(build_model("paper"), tmp_path / "partial.safetensors")


def test_kinetics_weights_do_not_fit_the_tiny_profile(tmp_path: Path) -> None:
    save_file(synthetic_kinetics_state(), tmp_path / "x3d_m.safetensors")
    with pytest.raises(ValueError, match="shape"):
        load_kinetics_x3d(build_model("tiny"), tmp_path / "x3d_m.safetensors")


class NotWeights:
    """Pickled by reference: a weights-only load must refuse it rather than import and run code."""


def test_kinetics_refuses_pickled_objects_and_unknown_suffixes(tmp_path: Path) -> None:
    torch.save({"model_state": NotWeights()}, tmp_path / "evil.pyth")
    with pytest.raises(ValueError, match="not a weights-only torch checkpoint"):
        load_kinetics_x3d(build_model("tiny"), tmp_path / "evil.pyth")
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"expected \.safetensors"):
        load_kinetics_x3d(build_model("tiny"), tmp_path / "weights.bin")


# --- F_a ----------------------------------------------------------------------------------------


def test_paper_audio_parameter_count_is_close_to_the_paper() -> None:
    count = count_parameters(build_model("paper").encoders["audio"])
    assert count == 4_161_216
    assert abs(count - 4.16e6) / 4.16e6 < 0.01


def test_audio_normalisation_buffers_are_saved_and_applied() -> None:
    encoder = AudioEncoder().eval()
    assert {"mel_mean", "mel_std"} <= set(encoder.state_dict())
    x = log_mel(2)
    mean, std = torch.linspace(-60, -20, 128), torch.linspace(5, 15, 128)
    with torch.no_grad():
        plain = encoder((x - mean.view(1, 1, -1, 1)) / std.view(1, 1, -1, 1))["audio"]
        encoder.set_normalization(mean, std)
        normalised = encoder(x)["audio"]
    assert torch.allclose(plain, normalised, atol=1e-5)
    assert torch.equal(encoder.state_dict()["mel_std"], std)


def test_audio_normalisation_rejects_bad_statistics() -> None:
    encoder = AudioEncoder()
    with pytest.raises(ValueError, match=r"shape \[128\]"):
        encoder.set_normalization(torch.zeros(64), torch.ones(64))
    with pytest.raises(ValueError, match="positive"):
        encoder.set_normalization(torch.zeros(128), torch.zeros(128))


def test_audio_rejects_wrong_layout() -> None:
    with pytest.raises(ValueError, match=r"\[B, 1, 128, T\]"):
        AudioEncoder()(torch.zeros(1, 64, 128))


# --- Profiles and the dict interface --------------------------------------------------------------


def test_profiles_are_paper_tiny_and_fg() -> None:
    assert tuple(PROFILES) == PROFILE_NAMES == ("paper", "tiny", "fg")  # the names the settings check
    assert all(profile.name == name for name, profile in PROFILES.items())
    assert DEFAULT_PROFILE == "fg"


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="paper, tiny, fg"):
        build_model("x3d-xl")


def test_fg_profile_shapes_and_parameter_count() -> None:
    model = build_model("fg").eval()
    visual = model.visual_input
    assert isinstance(visual, ForegroundInput) and (visual.height, visual.width) == (56, 100)
    assert count_parameters(model.encoders["visual"]) == 852_000
    assert count_parameters(model.encoders["audio"]) == 157_008
    frames = torch.randint(0, 256, (3, *CLIP_FRAMES_SHAPE), dtype=torch.uint8).numpy()
    stored = visual.store(frames)
    assert stored.shape == (3, 5, 56, 100, 3) and stored.dtype == np.uint8
    background = stored[:, 0]
    tensor = visual.tensor(stored, np.array([0, 1, 0]), background)
    assert tensor.shape == (3, 3, 5, 56, 100) and -1.0 <= float(tensor.min()) <= float(tensor.max()) <= 1.0
    with torch.no_grad():
        z = model({"visual": tensor, "audio": log_mel(3)})
    assert {key: tuple(value.shape) for key, value in z.items()} == {"visual": (3, 512), "audio": (3, 512)}
    with pytest.raises(ValueError, match=r"\[B, 3, T, 56, 100\]"):
        model({"visual": video(1)})


def test_fg_input_is_the_frame_minus_its_background_and_view_1_its_mirror() -> None:
    visual = ForegroundInput(height=4, width=6)
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 6, 3)).astype(np.uint8)
    background = np.random.default_rng(1).integers(0, 256, (2, 4, 6, 3)).astype(np.uint8)
    tensor = visual.tensor(frames, np.array([0, 1]), background).numpy()
    expected = (frames.astype(np.float32) - background[:, None]) / 255.0  # [B, T, H, W, 3]
    np.testing.assert_allclose(tensor[0], expected[0].transpose(3, 0, 1, 2), atol=1e-6)
    np.testing.assert_allclose(tensor[1], expected[1].transpose(3, 0, 1, 2)[..., ::-1], atol=1e-6)
    with pytest.raises(ValueError, match="background"):
        visual.tensor(frames, np.array([0, 1]))


def test_fg_store_averages_areas() -> None:
    frames = np.zeros((1, 5, 224, 398, 3), np.uint8)
    frames[..., :199, :] = 200  # left half bright
    small = ForegroundInput(height=56, width=100).store(frames)[0, 0]
    assert small[:, :49].min() == 200 and small[:, 51:].max() == 0


@pytest.mark.parametrize(("height", "width", "rows", "columns"),
                         [(56, 100, 224, 398), (2, 7, 224, 398), (1, 3, 224, 10)])
def test_fg_store_is_torch_area_interpolation_to_the_byte(height: int, width: int, rows: int, columns: int) -> None:
    """The integer sums give what interpolating in float gave (and what models were trained on), including ties
    rounded half to even, in int16 bands (2 of 224 rows: 112 per band) and int32 ones (1: 224 per band)."""
    frames = np.random.default_rng(height).integers(0, 256, (2, 5, rows, columns, 3), dtype=np.uint8)
    flat = torch.from_numpy(frames).reshape(-1, rows, columns, 3).permute(0, 3, 1, 2).float()
    expected = torch.nn.functional.interpolate(flat, size=(height, width), mode="area").round().to(torch.uint8)
    stored = ForegroundInput(height, width).store(frames)
    np.testing.assert_array_equal(stored, expected.permute(0, 2, 3, 1).reshape(2, 5, height, width, 3).numpy())
    np.testing.assert_array_equal(ForegroundInput(height, width).store(frames[1]), stored[1])
    with pytest.raises(ValueError, match="evenly"):
        ForegroundInput(3, width).store(frames)


@pytest.mark.parametrize("count", [1, 8, 11])
def test_a_table_stores_its_clips_in_groups_as_each_alone(count: int) -> None:
    """``table_from_clips`` shrinks ``STORE_GROUP`` (8) clips per call (one clip, one group, a group and a
    remainder): the same bytes as storing each clip alone; the crops input keeps each clip's frames, uncopied."""
    from avsurv.learning.data import CROPS, table_from_clips
    from avsurv.media.segment import Clip

    rng = np.random.default_rng(count)
    clips = [Clip("cam0", float(t), None, "cam0", False, rng.integers(0, 256, (5, 224, 398, 3), dtype=np.uint8),
                  np.zeros((1, 128, 64), np.float32)) for t in range(count)]
    visual = ForegroundInput(56, 100)
    table = table_from_clips(clips, visual)
    np.testing.assert_array_equal(table.frames, np.stack([visual.store(clip.frames) for clip in clips]))
    assert all(kept is clip.frames for kept, clip in zip(CROPS.store_clips([c.frames for c in clips]), clips,
                                                          strict=True))


def test_tiny_profile_is_small() -> None:
    model = build_model("tiny")
    assert count_parameters(model.encoders["visual"]) == 206_614
    assert count_parameters(model.encoders["audio"]) == 157_008
    assert count_parameters(model) < 400_000


@pytest.mark.parametrize("profile", ["paper", "tiny"])
def test_dict_interface_encodes_present_modalities(profile: str) -> None:
    model = build_model(profile).eval()
    assert isinstance(model, AudioVisualModel) and set(model.encoders) == {"visual", "audio"}
    with torch.no_grad():
        both = model({"visual": video(1), "audio": log_mel(1)})
        audio_only = model({"audio": log_mel(3)})
    assert {key: tuple(z.shape) for key, z in both.items()} == {
        "visual": (1, EMBEDDING_DIM),
        "audio": (1, EMBEDDING_DIM),
    }
    assert list(audio_only) == ["audio"] and audio_only["audio"].shape == (3, EMBEDDING_DIM)


def test_unknown_modality_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown modalities"):
        build_model("tiny")({"video": video(1)})


def test_tiny_is_deterministic_in_eval() -> None:
    model = build_model("tiny").eval()
    inputs = {"visual": video(2), "audio": log_mel(2)}
    with torch.no_grad():
        first, second = model(inputs), model(inputs)
    assert all(torch.equal(first[key], second[key]) for key in inputs)


def test_gradients_reach_every_tiny_parameter() -> None:
    model = build_model("tiny").train()
    out = model({"visual": video(4), "audio": log_mel(4)})
    (out["visual"].pow(2).mean() + out["audio"].pow(2).mean()).backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_embeddings_are_not_l2_normalised() -> None:
    with torch.no_grad():
        z = build_model("tiny").eval()({"audio": log_mel(4)})["audio"]
    assert not torch.allclose(z.norm(dim=1), torch.ones(4))


def test_state_dict_round_trips_through_safetensors_with_audio_statistics(tmp_path: Path) -> None:
    model = build_model("tiny").eval()
    model.encoders["audio"].set_normalization(torch.full((128,), -50.0), torch.full((128,), 12.0))
    save_file({name: t.contiguous() for name, t in model.state_dict().items()}, tmp_path / "m.safetensors")
    restored = build_model("tiny").eval()
    restored.load_state_dict(load_file(tmp_path / "m.safetensors"))
    inputs = {"visual": video(1), "audio": log_mel(1)}
    with torch.no_grad():
        assert all(torch.equal(model(inputs)[key], restored(inputs)[key]) for key in inputs)

"""``scripts/finetune_clip.py`` in process on a tiny random CLIP: an expert directory, bad input."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "finetune_clip.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("finetune_clip", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # the script sets --threads process-wide


def _args(clip_dir, dataset_dirs, out, *extra):
    return [
        "--pretrained",
        str(clip_dir),
        "--task",
        "a",
        "--dataset",
        str(dataset_dirs["a"]),
        "--classnames-from",
        "dataset",
        "--steps",
        "6",
        "--lr",
        "1e-2",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--accelerator",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def test_saves_a_vision_expert_with_provenance(script, clip_dir, dataset_dirs, tmp_path, capsys):
    from transformers import CLIPModel, CLIPVisionModel

    out = tmp_path / "expert_a"
    assert script.main(_args(clip_dir, dataset_dirs, out, "--eval-split", "test")) == 0
    assert "saved" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left"

    expert = CLIPVisionModel.from_pretrained(out)
    pre = CLIPModel.from_pretrained(clip_dir).vision_model.state_dict()
    got = expert.state_dict()
    assert got.keys() == pre.keys()
    assert any(not torch.equal(got[k], pre[k]) for k in pre)

    info = json.loads((out / "finetune_info.json").read_text())
    assert info["classnames"] == ["cat", "dog", "bird"]  # the dataset's ClassLabel names
    assert info["templates"] == list(script.GENERIC_TEMPLATES)
    assert info["recipe"]["steps"] == 6 and info["recipe"]["optimizer"] == "Adam"
    assert 0 <= info["accuracy_pretrained"] <= 1 and 0 <= info["accuracy_finetuned"] <= 1


def test_defaults_are_the_published_recipe(script):
    args = script.parse_args(["--pretrained", "p", "--task", "eurosat", "--out", "o"])
    assert (args.lr, args.steps, args.batch_size) == (1e-5, 4000, 32)
    assert (args.layer_decay, args.warmup_steps, args.schedule) == (1.0, 0, "cosine")
    assert args.split == "train" and args.precision == "32-true"


def test_task_defaults_come_from_the_task_configs(script):
    assert script.task_config_defaults("svhn", "smoke")["dataset"] == "ufldl-stanford/svhn"
    assert script.task_config_defaults("svhn", "smoke")["subset"] == "cropped_digits"
    tiny = script.task_config_defaults("digits", "smoke")
    assert tiny["dataset"] == "tiny://smoke/datasets/digits" and tiny["image_column"] == "image"
    assert script.task_config_defaults("no-such-task", "smoke") == {}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--layer-decay", "0"], "--layer-decay must be in (0, 1]"),
        (["--dataset", "/does/not/exist"], "does not exist"),
        (["--classnames-from", "eurosat"], "has 3 classes but 10 class names"),
        (["--classnames-from", "no-such-task"], "unknown image-classification task"),
        (["--label-column", "nope"], "no column 'nope'"),
        (["--precision", "7-bit"], "cannot set up Lightning Fabric"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    script, clip_dir, dataset_dirs, tmp_path, capsys, extra, message
):
    assert script.main(_args(clip_dir, dataset_dirs, tmp_path / "o", *extra)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("finetune_clip.py: error: ") and message in err[-1]
    assert not (tmp_path / "o").exists()


def test_unknown_task_needs_a_dataset(script, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert script.main(["--pretrained", "x", "--task", "mystery", "--out", out]) == 1
    assert "no task config giving its dataset" in capsys.readouterr().err


def test_offline_hub_model_fails_fast(script, dataset_dirs, tmp_path, capsys):
    args = ["--pretrained", "someone/not-cached-clip", "--task", "a"]
    args += ["--dataset", str(dataset_dirs["a"]), "--classnames-from", "dataset"]
    args += ["--accelerator", "cpu", "--out", str(tmp_path / "o")]
    assert script.main(args) == 1
    assert "cannot reach the Hugging Face hub" in capsys.readouterr().err.strip().splitlines()[-1]


def test_refuses_to_overwrite_unless_asked(script, clip_dir, dataset_dirs, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert script.main(_args(clip_dir, dataset_dirs, out)) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").exists()


def test_argparse_errors_exit_1(script, capsys):
    with pytest.raises(SystemExit) as e:
        script.main(["--task", "a"])
    assert e.value.code == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

"""The one reading of ``-c``/``--config`` on a command line (diffplat.configs.config_args),
shared by the path resolution of every command, the backbone arguments a config sets and
the trust check of a config's model class."""

import pytest

from diffplat.configs import config_args, config_files, resolve_args
from diffplat.training.resume import _other_model_class


def test_every_form_of_the_option_is_read_in_order():
    argv = ["fit", "-c", "a.yaml", "--trainer.max_steps", "3", "--config=b.yaml",
            "--config", "c.yaml", "-c"]  # a trailing -c names nothing
    assert config_args(argv) == [(2, "", "a.yaml"), (5, "--config=", "b.yaml"),
                                 (7, "", "c.yaml")]
    assert config_files(argv) == ["a.yaml", "b.yaml", "c.yaml"]
    assert config_files(["sample", "--ckpt", "x"]) == []


def test_resolution_keeps_each_forms_spelling(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("trainer: {}\n")
    b.write_text("model: {}\n")
    argv = ["fit", "-c", str(a), f"--config={b}", "--seed_everything", "1"]
    assert resolve_args(argv) == argv
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ValueError, match="the config file is empty"):
        resolve_args(["fit", f"--config={empty}"])
    with pytest.raises(FileNotFoundError, match="config not found: nowhere.yaml"):
        resolve_args(["fit", "--config", "nowhere.yaml"])


@pytest.mark.parametrize("form", ["-c", "--config", "--config="])
def test_an_untrusted_model_class_is_refused_in_every_form(tmp_path, form):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text("model:\n  class_path: os.system\n  init_args: {}\n")
    argv = ["fit", form + str(cfg)] if form.endswith("=") else ["fit", form, str(cfg)]
    with pytest.raises(ValueError, match="outside the trusted packages"):
        _other_model_class(argv)


def test_backbone_arguments_set_in_any_config_form_count_as_explicit(tmp_path):
    from types import SimpleNamespace

    from diffplat.training.lightning import DiffplatCLI

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("model:\n  backbone:\n    init_args: {hidden: 8}\n")
    b.write_text("model:\n  backbone:\n    init_args: {layers: 2}\n")
    cli = SimpleNamespace(_argv=["fit", "-c", str(a), f"--config={b}",
                                 "--model.backbone.init_args.num_features=6"])
    assert DiffplatCLI._explicit_backbone_args(cli) == {"hidden", "layers", "num_features"}
